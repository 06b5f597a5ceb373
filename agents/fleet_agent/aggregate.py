"""Repetitions of a case, each from its own worker process, combined into one result.

- Latency statistics are over the samples of all repetitions together, in the order they
  were taken (so drift across repetitions, as a device heats, shows as drift).
- ``repetition_p50s_ms`` lists each repetition's p50; ``repetition_p50_cv`` is their spread,
  what a re-run of the case would likely move by. The p95, p99 (where every repetition has
  the samples for them) and throughput of each repetition are listed the same way: how far a
  night's figure can be trusted, which the regression check weighs.
- Cold figures (load, first inference, warm-up) are the median over repetitions; memory
  figures and the CPU wait are the worst repetition's, as budgets should see them.
- The accuracy pass ran in the first repetition only; its fields are taken from there.
- GPU providers: compute-only percentiles over the IO-bound samples of all repetitions; the
  GPU's and a Jetson's figures combined over repetitions (lowest clock, highest clock and
  temperature, mean power and load, every throttle reason seen); an engine build is the
  median of the repetitions that built one (the first, when the cache works).
- ``valid`` is False, with every reason in ``invalid_reasons``, when the trimmed CV or the
  drift is over its limit, the device throttled (the CPU; the GPU slowed down for heat or
  power; a Jetson sensor reached its trip point), the repetitions disagree, the worker waited
  for a CPU (a busy neighbour: judged for CPU providers only, where a run is CPU-bound), the
  warm-up never settled, or there are too few samples for p99.
"""

from typing import Any, Dict, List, cast

import numpy as np

from fleet_agent import gpu_parse, measure, stats
from fleet_agent.protocol import Case, GenerationEntry, RepetitionBody, Result, ResultFields

MEDIAN = ("load_ms", "first_inference_ms", "warmup_runs", "warmup_s")
WORST = (
    "rss_baseline_mb",
    "rss_after_load_mb",
    "peak_rss_mb",
    "peak_delta_mb",
    "rss_anon_mb_after_load",
    "rss_file_mb_after_load",
    "gpu_memory_baseline_mb",
    "gpu_memory_after_load_mb",
    "gpu_memory_after_run_mb",
    "gpu_memory_delta_mb",
    "gpu_memory_peak_mb",
    "cpu_wait_frac",
)
# The GPU's and the Jetson's figures of each repetition's timed phase, and how they combine.
LOWEST = ("gpu_clock_mhz_min",)
HIGHEST = ("gpu_clock_mhz_max", "gpu_temp_max_c", "tegra_temp_max_c")
MEAN = (
    "gpu_power_w_mean",
    "gpu_util_mean",
    "tegra_gpu_load_mean",
    "tegra_emc_load_mean",
    "tegra_power_mw_mean",
)
SUMMED = ("duration_s",)
# Providers that compute on the CPU: their threads are busy for the whole timed phase.
CPU_PROVIDERS = ("cpu", "xnnpack", "builtin")


def combine(repetitions: List[RepetitionBody], thermal: Dict[str, Any], case: Case) -> Result:
    """The case's result event from its repetitions' measurements."""
    settings = case["settings"]
    first = repetitions[0]
    samples = [s for r in repetitions for s in r["samples_ms"]]
    p50s = [stats.percentile(r["samples_ms"], 50) for r in repetitions]
    all_fields = [r["fields"] for r in repetitions]

    fields: Dict[str, Any] = dict(first["fields"])  # versions, accuracy: first repetition
    fields.update(stats.latency_stats(samples))
    for key in MEDIAN:
        fields[key] = float(np.median([f[key] for f in all_fields]))
    for key in WORST:
        if key in fields:
            fields[key] = max(float(f[key]) for f in all_fields)
    for key in SUMMED:
        fields[key] = sum(float(f[key]) for f in all_fields)
    fields.update(
        iterations=float(len(samples)),
        throughput_ips=settings["batch"] * 1000.0 / fields["latency_ms_mean"],
        repetitions=float(len(repetitions)),
        repetition_p50s_ms=_listed(p50s),
        repetition_throughputs_ips=_listed(
            [settings["batch"] * 1000.0 / float(np.mean(r["samples_ms"])) for r in repetitions]
        ),
        repetition_p50_cv=stats.cv(p50s),
        latency_drift=stats.drift(samples),
        warmup_stable=all(bool(f["warmup_stable"]) for f in all_fields),
    )
    for percentile, key in ((95, "repetition_p95s_ms"), (99, "repetition_p99s_ms")):
        if all(len(r["samples_ms"]) >= stats.min_samples_for(percentile) for r in repetitions):
            fields[key] = _listed(
                [stats.percentile(r["samples_ms"], percentile) for r in repetitions]
            )
    fields.update(thermal)
    gpu_reasons = _combine_gpu(fields, all_fields, repetitions)
    if gpu_reasons:
        fields["throttled"] = True

    _, reasons = stats.validity(
        samples,
        cv_max=settings["cv_max"],
        drift_max=settings["drift_max"],
        throttled=bool(thermal.get("throttled")),
    )
    reasons += gpu_reasons
    if fields["repetition_p50_cv"] > settings["repetition_cv_max"]:
        reasons.append(
            "the repetitions' p50s ({} ms) vary by CV {:.3f}, above the limit {:.3f}".format(
                fields["repetition_p50s_ms"],
                fields["repetition_p50_cv"],
                settings["repetition_cv_max"],
            )
        )
    provider = first["tags"]["provider"]
    if provider in CPU_PROVIDERS and fields["cpu_wait_frac"] > settings["cpu_wait_max"]:
        reasons.append(
            "the worker waited {:.0%} of the timed phase for a CPU (limit {:.0%}): another"
            " process on its cores, or more threads ({}) than cores".format(
                fields["cpu_wait_frac"], settings["cpu_wait_max"], settings["threads"]
            )
        )
    if not fields["warmup_stable"]:
        reasons.append("the warm-up did not settle (median of the last ten runs still moving)")
    needed = stats.min_samples_for(measure.TOP_PERCENTILE)
    if len(samples) < needed:
        reasons.append(
            "{} samples cannot support p99 (it needs {}): max_seconds cut the timed phase"
            " short".format(len(samples), needed)
        )
    fields.update(valid=not reasons, invalid_reasons="; ".join(reasons))
    return {
        "event": "result",
        "case": case["id"],
        "tags": first["tags"],
        "fields": cast(ResultFields, fields),
        "generation": combine_generation(repetitions),
    }


def _listed(values: List[float]) -> str:
    """Each repetition's figure, in the order they ran: "0.61,0.83,0.62"."""
    return ",".join("{:.6g}".format(v) for v in values)


def _combine_gpu(
    fields: Dict[str, Any], all_fields: List[Dict[str, Any]], repetitions: List[RepetitionBody]
) -> List[str]:
    """The GPU and Jetson fields of the repetitions combined into ``fields``; the reasons
    they make the result not valid (a slowdown for heat or power, a trip point reached)."""
    for keys, how in ((LOWEST, min), (HIGHEST, max), (MEAN, np.mean)):
        for key in keys:
            values = [float(f[key]) for f in all_fields if key in f]
            if values:
                fields[key] = float(how(values))
    builds = [float(f["engine_build_ms"]) for f in all_fields if "engine_build_ms" in f]
    if builds:
        fields["engine_build_ms"] = float(np.median(builds))
    compute = [s for r in repetitions for s in r.get("compute_samples_ms", [])]
    for pct in (50, 95, 99):
        if compute:
            fields["compute_latency_ms_p{}".format(pct)] = stats.percentile(compute, pct)
    reasons = []
    if "gpu_throttle_reasons" in fields:
        seen = _union(str(f.get("gpu_throttle_reasons", "")) for f in all_fields)
        fields["gpu_throttle_reasons"] = ",".join(seen)
        slow = gpu_parse.slowdowns(fields["gpu_throttle_reasons"])
        if slow:
            reasons.append("the GPU slowed down for heat or power ({})".format(", ".join(slow)))
    # Not a result field: it becomes the reason.
    sensors = _union(str(f.get("tegra_throttle_sensors", "")) for f in all_fields)
    fields.pop("tegra_throttle_sensors", None)
    if sensors:
        reasons.append("the Jetson reached a thermal trip point: " + ", ".join(sensors))
    return reasons


def _union(lists: Any) -> List[str]:
    """The distinct items of comma-separated lists, in the order first seen."""
    seen: List[str] = []
    for text in lists:
        seen += [item for item in text.split(",") if item and item not in seen]
    return seen


def combine_generation(repetitions: List[RepetitionBody]) -> List[GenerationEntry]:
    """Per context length, the median of each figure over the repetitions; prefill speed
    from the median time to first token, so that the two always agree."""
    runs = [r["generation"] for r in repetitions if r["generation"]]
    if not runs:
        return []
    combined = []
    for entries in zip(*runs):
        rows = [cast(Dict[str, float], e) for e in entries]
        median = {key: float(np.median([r[key] for r in rows])) for key in rows[0]}
        median["prefill_tokens_per_s"] = median["context_tokens"] / (median["ttft_ms"] / 1e3)
        combined.append(cast(GenerationEntry, median))
    return combined
