"""Repetitions combined into one result (fleet_agent.aggregate): statistics and validity."""

from __future__ import annotations

from pathlib import Path

import pytest
from jobs import make_case, settings

from fleet_agent import aggregate, stats

ZOO = Path(__file__).resolve().parents[1] / "zoo"


def rep(samples, provider="cpu", **fields):
    base = {
        "load_ms": 10.0,
        "first_inference_ms": 2.0,
        "warmup_runs": 20.0,
        "warmup_s": 0.1,
        "warmup_stable": True,
        "duration_s": 1.0,
        "cpu_wait_frac": 0.01,
        "rss_baseline_mb": 50.0,
        "rss_after_load_mb": 60.0,
        "peak_rss_mb": 70.0,
        "peak_delta_mb": 20.0,
        "runtime_version": "1.0",
    }
    base.update(fields)
    return {
        "tags": {"runtime": "onnxruntime", "provider": provider},
        "fields": base,
        "samples_ms": list(samples),
        "generation": [],
    }


def case(**overrides):
    return make_case("m", ZOO / "digits_mlp.onnx", settings=settings(batch=4, **overrides))


def combine(reps, thermal, case):
    """(tags, fields, generation) of the result event ``aggregate.combine`` makes."""
    result = aggregate.combine(reps, thermal, case)
    assert result["event"] == "result" and result["case"] == case["id"]
    return result["tags"], result["fields"], result["generation"]


STEADY = [1.0, 1.01, 0.99, 1.02, 0.98] * 50  # 250 samples, CV about 1.5 %


def test_three_steady_repetitions_make_one_valid_result():
    reps = [
        rep(STEADY, load_ms=30.0, accuracy_top1=0.98),
        rep(STEADY, load_ms=10.0, peak_rss_mb=75.0, peak_delta_mb=24.0),
        rep(STEADY, load_ms=12.0, cpu_wait_frac=0.03),
    ]
    tags, fields, generation = combine(reps, {"throttled": False}, case())
    assert tags == {"runtime": "onnxruntime", "provider": "cpu"}
    assert generation == []
    assert fields["valid"] is True and fields["invalid_reasons"] == ""
    assert fields["iterations"] == 750.0 and fields["repetitions"] == 3.0
    assert fields["latency_ms_p50"] == stats.percentile(STEADY * 3, 50)
    assert fields["repetition_p50s_ms"] == "1,1,1"
    assert fields["repetition_p50_cv"] == 0.0
    assert fields["load_ms"] == 12.0  # median
    assert fields["peak_rss_mb"] == 75.0 and fields["peak_delta_mb"] == 24.0  # worst
    assert fields["cpu_wait_frac"] == 0.03
    assert fields["duration_s"] == 3.0
    assert fields["throughput_ips"] == pytest.approx(4 * 1000 / fields["latency_ms_mean"])
    assert fields["accuracy_top1"] == 0.98  # the first repetition's accuracy pass
    assert fields["throttled"] is False


def test_repetitions_that_disagree_are_invalid():
    reps = [rep(STEADY), rep([s * 1.2 for s in STEADY]), rep(STEADY)]
    _, fields, _ = combine(reps, {"throttled": False}, case(drift_max=1.0))
    assert fields["valid"] is False
    assert fields["repetition_p50s_ms"] == "1,1.2,1"
    assert fields["repetition_p50_cv"] == pytest.approx(stats.cv([1.0, 1.2, 1.0]))
    # Each repetition's p95 and throughput too (batch 4); 250 samples each are enough for a
    # p95 (130) and not for a p99 (662), which is then not listed at all.
    assert fields["repetition_p95s_ms"] == "1.02,1.224,1.02"
    throughputs = [float(v) for v in fields["repetition_throughputs_ips"].split(",")]
    assert throughputs == pytest.approx([4000, 4000 / 1.2, 4000], rel=1e-5)  # mean 1 ms, 1.2 ms
    assert "repetition_p99s_ms" not in fields
    assert "repetitions' p50s (1,1.2,1 ms) vary by CV 0.108" in fields["invalid_reasons"]
    # With a looser limit the same figures pass.
    _, fields, _ = combine(reps, {"throttled": False}, case(drift_max=1.0, repetition_cv_max=0.2))
    assert fields["valid"] is True
    long = [rep(STEADY * 3), rep(STEADY * 3)]  # 750 samples each: a p99 of each
    _, fields, _ = combine(long, {"throttled": False}, case(drift_max=1.0))
    assert fields["repetition_p99s_ms"] == "1.02,1.02"


def test_a_device_that_heats_up_drifts_across_repetitions():
    reps = [rep(STEADY), rep([s * 1.1 for s in STEADY]), rep([s * 1.3 for s in STEADY])]
    _, fields, _ = combine(reps, {"throttled": False}, case(repetition_cv_max=1))
    assert fields["latency_drift"] == pytest.approx(0.3)
    assert fields["invalid_reasons"].startswith("median drifted +30.0%")


def test_cpu_wait_makes_a_cpu_run_invalid_but_not_a_gpu_run():
    waited = [rep(STEADY, cpu_wait_frac=0.5)] + [rep(STEADY)] * 2
    _, fields, _ = combine(waited, {"throttled": False}, case())
    assert fields["valid"] is False
    assert fields["invalid_reasons"] == (
        "the worker waited 50% of the timed phase for a CPU (limit 10%): another process on"
        " its cores, or more threads (1) than cores"
    )
    on_gpu = [rep(STEADY, provider="cuda", cpu_wait_frac=0.5)] * 3
    _, fields, _ = combine(on_gpu, {"throttled": False}, case())
    assert fields["valid"] is True and fields["cpu_wait_frac"] == 0.5


def test_throttling_and_temperatures_come_from_the_watch():
    watched = {"throttled": True, "temp_start_c": 50.0, "temp_max_c": 71.5, "temp_end_c": 70.0}
    _, fields, _ = combine([rep(STEADY)] * 3, watched, case())
    assert fields["temp_max_c"] == 71.5 and fields["throttled"] is True
    assert fields["invalid_reasons"] == "the device throttled during the run"


def test_an_unsettled_warmup_and_too_few_samples_are_reasons():
    reps = [rep(STEADY[:100], warmup_stable=False)]
    _, fields, _ = combine(reps, {"throttled": False}, case())
    assert fields["warmup_stable"] is False
    assert fields["invalid_reasons"] == (
        "the warm-up did not settle (median of the last ten runs still moving); "
        "100 samples cannot support p99 (it needs 662): max_seconds cut the timed phase short"
    )


def test_noise_within_the_samples_is_invalid():
    noisy = [1.0, 3.0] * 125
    _, fields, _ = combine([rep(noisy)] * 3, {"throttled": False}, case())
    trimmed = stats.latency_stats(noisy * 3)["latency_cv_trimmed"]
    assert fields["invalid_reasons"] == f"latency CV {trimmed:.3f} is above the limit 0.500"


def test_generation_figures_are_the_median_over_repetitions():
    def entries(ttft):
        return [
            {
                "context_tokens": float(n),
                "ttft_ms": ttft * n / 32,
                "prefill_tokens_per_s": 32e3 / ttft,
                "decode_tokens_per_s": 100.0 / ttft,
            }
            for n in (32, 96)
        ]

    reps = [dict(rep(STEADY), generation=entries(t)) for t in (1.0, 4.0, 2.5)]
    _, _, generation = combine(reps, {"throttled": False}, case())
    assert generation == [
        {
            "context_tokens": 32.0,
            "ttft_ms": 2.5,
            "prefill_tokens_per_s": 32 / 2.5e-3,  # from the median ttft, not a median of its own
            "decode_tokens_per_s": 40.0,
        },
        {
            "context_tokens": 96.0,
            "ttft_ms": 7.5,
            "prefill_tokens_per_s": 96 / 7.5e-3,
            "decode_tokens_per_s": 40.0,
        },
    ]
