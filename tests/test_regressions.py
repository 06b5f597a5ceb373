"""Baselines and regression detection (fleet/regressions/, docs/regressions.md).

Pure logic on synthetic series first (seeded, so every run sees the same numbers), then the
check on a real store, the CLI, the JUnit export, and last one end-to-end test: real
`fleet run`s on the built-in `local` device where a model that does more work makes one
series genuinely slower.
"""

from __future__ import annotations

import itertools
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from fleet.cli import main
from fleet.errors import ConfigError
from fleet.regressions.changepoints import change_points
from fleet.regressions.check import check_run, gating
from fleet.regressions.judge import Verdict, judge, t_quantile
from fleet.regressions.series import METRICS, Point
from fleet.regressions.stored import open_regressions, parse_since
from fleet.rerun import settle
from fleet.results.export import to_junit
from fleet.results.record import make_record
from fleet.results.report_html import build_report, render_html
from fleet.results.store import Store
from fleet.suite import REGRESSION_METRICS, Regressions, load_suite

ROOT = Path(__file__).resolve().parents[1]
DAY_NS = 86_400 * 10**9
P50 = METRICS["latency_ms_p50"]


# --- pure logic on synthetic series ----------------------------------------------------------


def points(values: np.ndarray | list[float], ci: float = 0.002) -> list[Point]:
    """Night 1, 2, ... as runs r01, r02, ...; each with a confidence interval of ±ci."""
    return [
        Point(f"r{night:02d}", night * DAY_NS, float(v), ci * float(v) / 1.96)
        for night, v in enumerate(values, start=1)
    ]


def nightly(
    values: np.ndarray | list[float],
    rules: Regressions | None = None,
    metric: str = "latency_ms_p50",
) -> dict[int, Verdict]:
    """The verdict of every night from the second on, each against the nights before it."""
    series = points(values)
    rules = rules or Regressions()
    return {
        night: judge(series[: night - 1], series[night - 1], METRICS[metric], rules)
        for night in range(2, len(series) + 1)
    }


def noise(seed: int, nights: int = 20, spread: float = 0.015) -> np.ndarray:
    return 1.0 + spread * np.random.default_rng(seed).standard_normal(nights)


def flagged(verdicts: dict[int, Verdict], state: str = "regression") -> list[int]:
    return [night for night, v in verdicts.items() if v.state == state]


@pytest.mark.parametrize("seed", range(8))
def test_a_10_percent_step_is_flagged_at_its_night(seed: int) -> None:
    values = noise(seed)
    values[14:] *= 1.10  # night 15 of 20 on
    verdicts = nightly(values)
    nights = flagged(verdicts)
    assert nights and 14 <= nights[0] <= 16, nights
    assert nights == list(range(nights[0], 21))  # open until fixed: every night after
    first = verdicts[nights[0]]
    assert first.metric == "latency_ms_p50" and 6 < first.change_pct < 14
    assert first.baseline is not None and abs(first.baseline.center - 1) < 0.02
    if seed != 8:  # where the noise itself drifts, the shift is dated earlier (see below)
        assert verdicts[20].since_run in ("r14", "r15", "r16")
    assert not flagged(verdicts, "improvement")


def test_where_the_noise_drifts_the_shift_is_dated_where_the_level_moved() -> None:
    values = noise(8)
    values[14:] *= 1.10
    # Nights 8-14 sit 3 % above nights 1-7: a change point, below the minimum effect, so it
    # neither flags nor moves the baseline; the regression is measured from the first level.
    assert change_points(values[:15].tolist()) == [7]
    verdict = nightly(values)[15]
    assert verdict.state == "regression" and verdict.since_run == "r08"


@pytest.mark.parametrize("seed", range(100, 110))
def test_a_flat_noisy_series_raises_no_alarm(seed: int) -> None:
    verdicts = nightly(noise(seed, nights=30, spread=0.015))
    assert not [v for v in verdicts.values() if v.flagged]


def test_false_alarms_stay_near_the_design_rate_when_noise_dwarfs_the_minimum_effect() -> None:
    # 5 % night-to-night noise against a 5 % minimum effect: only the statistics stand
    # between the noise and an alarm. Each night is a two-sided test at 1 %.
    verdicts = [v for seed in range(20) for v in nightly(noise(seed, 25, 0.05)).values()]
    judged = [v for v in verdicts if v.state != "history"]
    alarms = sum(v.flagged for v in judged)
    assert len(judged) == 20 * 20
    assert alarms <= 0.02 * len(judged), alarms


def test_an_improvement_is_reported_as_such_then_becomes_the_baseline() -> None:
    values = noise(5, nights=30)
    values[14:25] *= 0.90  # 10 % faster from night 15 ...
    values[25:] *= 1.0  # ... and back to the old level from night 26: the gain is lost
    verdicts = nightly(values)
    improved = flagged(verdicts, "improvement")
    assert improved and improved[0] == 15 and all(n < 18 for n in improved), improved
    assert verdicts[improved[0]].change_pct < -7
    assert verdicts[improved[0]].since_run == "r15"
    assert verdicts[22].state == "ok"  # the faster level is the baseline now
    base = verdicts[22].baseline
    assert base is not None and 0.88 < base.center < 0.92
    assert flagged(verdicts)[0] == 26  # losing the improvement is a regression


def test_a_slow_drift_is_caught_and_dated_where_it_began() -> None:
    values = noise(3, nights=30, spread=0.01)
    values[9:] *= 1 + 0.008 * np.arange(1, 22)  # 0.8 % slower every night from night 10
    verdicts = nightly(values)
    nights = flagged(verdicts)
    assert nights and nights[0] <= 18  # by then 7 % slower than the baseline
    assert all(not v.flagged for n, v in verdicts.items() if n < 10)
    assert verdicts[30].since_run in ("r09", "r10", "r11")


def test_not_enough_history_says_how_many_results_of_how_many() -> None:
    verdicts = nightly([1.0, 1.01, 0.99])
    assert verdicts[3].state == "history"
    assert verdicts[3].note == "not enough history: 2 valid results of 5 needed"


def test_accuracy_is_judged_in_percentage_points() -> None:
    rules = Regressions()
    top1 = METRICS["accuracy_top1"]
    history = points([0.95] * 6, ci=0)
    assert judge(history, Point("new", 0, 0.947), top1, rules).state == "ok"  # 0.3 pp
    verdict = judge(history, Point("new", 0, 0.94), top1, rules)  # 1 pp, every night 0.95
    verdict = Verdict(**{**verdict.__dict__, "series": "m on d"})
    assert verdict.state == "regression"
    assert "-1.00 pp" in verdict.message()


def test_the_measured_confidence_interval_counts() -> None:
    history = points([1.0, 1.001, 0.999, 1.0, 1.001, 0.999], ci=0.001)
    tight = Point("new", 0, 1.08, sigma=0.001)
    loose = Point("new", 0, 1.08, sigma=0.05)  # the new p50 itself is uncertain by ±10 %
    assert judge(history, tight, P50, Regressions()).state == "regression"
    assert judge(history, loose, P50, Regressions()).state == "ok"


def test_minimum_effect_and_direction_per_metric() -> None:
    history = points([100.0, 101.0, 99.0, 100.0, 100.5, 99.5], ci=0)
    rules = Regressions(latency_pct=5, memory_pct=10)
    speed = METRICS["throughput_ips"]
    assert judge(history, Point("n", 0, 90.0), speed, rules).state == "regression"
    assert judge(history, Point("n", 0, 110.0), speed, rules).state == "improvement"
    memory = METRICS["peak_rss_mb"]
    assert judge(history, Point("n", 0, 108.0), memory, rules).state == "ok"  # < 10 %
    assert judge(history, Point("n", 0, 112.0), memory, rules).state == "regression"


def test_change_points_statistic_is_e_divisive_means() -> None:
    from fleet.regressions.changepoints import _split_statistics

    x = np.random.default_rng(0).standard_normal(12)
    x[7:] += 2
    stats = _split_statistics(x[None, :], 3)[0]
    for tau, q in zip(range(3, 10), stats, strict=True):
        left, right = x[:tau], x[tau:]
        m, k = len(left), len(right)
        cross = np.abs(left[:, None] - right[None, :]).mean()
        within_l = np.abs(left[:, None] - left[None, :]).sum() / (m * (m - 1))
        within_r = np.abs(right[:, None] - right[None, :]).sum() / (k * (k - 1))
        assert q == pytest.approx(m * k / (m + k) * (2 * cross - within_l - within_r))
    (found,) = change_points(x.tolist())
    assert found in (6, 7, 8)
    assert change_points(np.random.default_rng(1).standard_normal(40).tolist()) == []
    assert change_points([1.0] * 10) == []


def test_t_quantile_matches_tables() -> None:
    assert t_quantile(4) == 4.604
    assert t_quantile(29) == 2.756
    assert t_quantile(30) == pytest.approx(2.750, abs=1e-3)
    assert t_quantile(120) == pytest.approx(2.617, abs=1e-3)
    assert t_quantile(0) == pytest.approx(2.5758, abs=1e-4)


def test_since_parses_durations() -> None:
    now = 10**18
    assert parse_since("7d", lambda: now) == now - 7 * DAY_NS
    assert parse_since("12h", lambda: now) == now - 12 * 3600 * 10**9
    with pytest.raises(ValueError, match="such as 7d"):
        parse_since("7 days")


# --- the suite's `regressions:` --------------------------------------------------------------


def write_suite(tmp_path: Path, regressions: str) -> Path:
    path = tmp_path / "suite.yaml"
    model = ROOT / "zoo" / "digits_mlp.onnx"
    path.write_text(f"name: s\nmodels:\n  - {{name: m, path: {model}}}\n{regressions}")
    return path


def test_regressions_in_the_suite(tmp_path: Path) -> None:
    assert load_suite(write_suite(tmp_path, "")).regressions is None
    declared = load_suite(write_suite(tmp_path, "regressions:\n")).regressions
    assert declared == Regressions()
    text = (
        "regressions:\n  latency_pct: 3\n  memory_pct: 20\n  accuracy_pp: 1\n  history: 12\n"
        "  gate: false\n  metrics: [latency_ms_p50, ttft_ms]\n  confirm: 2\n"
    )
    rules = load_suite(write_suite(tmp_path, text)).regressions
    assert rules == Regressions(3.0, 20.0, 1.0, 12, 12, False, ("latency_ms_p50", "ttft_ms"), 2)
    assert gating(None, None) is False  # no `regressions:`: checked, but never gating
    assert gating(Regressions(), None) is True
    assert gating(rules, None) is False
    assert gating(None, True) is True and gating(Regressions(), False) is False
    assert set(METRICS) == set(REGRESSION_METRICS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "regressions:\n  latency_pct: 5\n  latncy: 3\n",
            r"^\S*suite.yaml:6: unknown key 'latncy' in regressions; expected one of",
        ),
        (
            "regressions:\n  metrics: [latency_ms_p50, latency_p50]\n",
            r"^\S*suite.yaml:5: unknown metric 'latency_p50' in regressions.metrics;"
            r" expected one of latency_ms_p50, ",
        ),
        ("regressions: {history: 1}\n", r"suite.yaml:4: regressions.history must be a whole"),
        ("regressions: {latency_pct: -5}\n", r"suite.yaml:4: regressions.latency_pct must be"),
        ("regressions: {gate: 'yes'}\n", r"suite.yaml:4: regressions.gate must be true or"),
        (
            "regressions: {confirm: 9}\n",
            r"suite.yaml:4: regressions.confirm must be a whole number from 0 to 5, not 9",
        ),
        ("regressions: {metrics: []}\n", r"suite.yaml:4: regressions.metrics must be a non-"),
        (
            "regressions: {history: 8, window: 6}\n",
            r"suite.yaml:4: regressions.window \(6\) must be at least regressions.history \(8\)",
        ),
        ("regressions: 5\n", r"suite.yaml:4: 'regressions' must be a mapping"),
    ],
)
def test_bad_regressions_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_suite(write_suite(tmp_path, text))
    assert "\n" not in str(caught.value)


def test_an_unknown_metric_stops_fleet_run_with_one_line_and_exit_2(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, "regressions:\n  metrics: [p50]\n")
    result = CliRunner().invoke(main, ["run", str(suite), "--store", str(tmp_path / "r.db")])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {suite}:5: unknown metric 'p50' in regressions")
    assert result.output.count("\n") == 1


# --- the check on a real store ---------------------------------------------------------------

TAGS = {
    "suite": "nightly",
    "device": "lab1",
    "device_class": "lab",
    "arch": "x86_64",
    "os": "linux",
    "runtime": "onnxruntime",
    "provider": "cpu",
    "format": "onnx",
    "precision": "fp32",
    "batch": "1",
    "threads": "1",
}


def store_night(store: Store, night: int, p50s: dict[str, float], **fields: object) -> str:
    """One run of suite `nightly` on lab1: a result per model with that p50 (valid, 300
    samples: p95 can be judged, p99 cannot)."""
    run_id = f"202611{night:02d}T020000Z-{night:06x}"
    at = time.time_ns() - (40 - night) * DAY_NS
    store.start_run(run_id, "nightly", ["lab1"])
    for i, (model, p50) in enumerate(sorted(p50s.items())):
        values: dict[str, object] = {
            "run_id": run_id,
            "status": "ok",
            "valid": True,
            "latency_ms_p50": p50,
            "latency_ms_p95": p50 * 1.2,
            "latency_ms_p99": p50 * 1.5,
            "latency_p50_ci95_low_ms": p50 * 0.999,
            "latency_p50_ci95_high_ms": p50 * 1.001,
            "iterations": 300,
            "peak_rss_mb": 70.0,
            "accuracy_top1": 0.97,
            "passed": True,
            **fields,
        }
        store.add(make_record("result", {**TAGS, "model": model}, values, at + i * 10**6))
    store.finish_run(run_id, 0)
    return run_id


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "results.sqlite")


def flat_nights(store: Store, nights: int, **models: float) -> list[str]:
    wobble = noise(0, nights, 0.01)
    return [
        store_night(store, n, {m: v * wobble[n - 1] for m, v in models.items()})
        for n in range(1, nights + 1)
    ]


def test_a_regression_is_stored_as_its_own_record(store: Store) -> None:
    flat_nights(store, 8, slow=2.0, steady=1.0)
    run_id = store_night(store, 9, {"slow": 2.4, "steady": 1.0})
    check = check_run(store, run_id, Regressions(), gate=True)
    assert [(v.series, v.metric) for v in check.regressions] == [
        ("slow onnx:fp32 onnxruntime/cpu batch=1 threads=1 on lab1", "latency_ms_p50"),
        ("slow onnx:fp32 onnxruntime/cpu batch=1 threads=1 on lab1", "latency_ms_p95"),
    ]  # not p99: 300 samples cannot support it
    (p50, _) = store.records(run_id, "regression")
    assert p50.tags == {**TAGS, "model": "slow", "metric": "latency_ms_p50"}
    assert p50.fields["run_id"] == run_id and p50.fields["since_run"] == run_id
    assert p50.fields["direction"] == "regression" and p50.fields["gated"] is True
    assert p50.fields["value"] == 2.4 and p50.fields["baseline_runs"] == 8.0
    assert 1.95 < float(p50.fields["baseline"]) < 2.05 and 0 < float(p50.fields["spread"]) < 0.05
    assert 17 < float(p50.fields["change_pct"]) < 23
    assert re.fullmatch(
        r"slow onnx:fp32 onnxruntime/cpu batch=1 threads=1 on lab1: latency_ms_p50 2\.400 ms vs"
        r" baseline 2\.0\d\d ± 0\.0\d\d ms \(8 runs\): \+\d+\.\d%, since run " + run_id,
        str(p50.fields["message"]),
    )
    assert check.exit_code(0) == 1 and check.exit_code(2) == 2
    assert check.lines()[-1].endswith("(gate on: the run fails)")
    # Checking again adds nothing twice; without the gate the exit code stays.
    again = check_run(store, run_id, Regressions(), gate=False)
    assert len(again.regressions) == 2 and again.exit_code(0) == 0
    assert len(store.records(run_id, "regression")) == 2


def test_noisy_results_are_reported_and_never_a_baseline(store: Store) -> None:
    wobble = noise(1, 8, 0.01)
    for night in range(1, 9):
        # Every other night is noisy and ten times slower: were it used, nothing would pass.
        noisy = night % 2 == 0
        p50 = (10.0 if noisy else 1.0) * wobble[night - 1]
        store_night(store, night, {"m": p50}, valid=not noisy, invalid_reasons="throttled")
    ok = check_run(store, store_night(store, 9, {"m": 1.0}))
    assert (ok.verdicts[0].state, ok.verdicts[0].metric) == ("history", "")
    assert ok.verdicts[0].note == "not enough history: 4 valid results of 5 needed"
    store_night(store, 10, {"m": 1.01})
    judged = check_run(store, store_night(store, 11, {"m": 1.02}))
    assert {v.state for v in judged.verdicts} == {"ok"}
    assert judged.verdicts[0].baseline is not None and judged.verdicts[0].baseline.runs == 6
    noisy = check_run(
        store,
        store_night(store, 12, {"m": 5.0}, valid=False, invalid_reasons="latency CV 0.9 is"),
    )
    (verdict,) = noisy.verdicts
    assert verdict.state == "noisy" and not noisy.records
    assert noisy.lines()[0] == (
        "m onnx:fp32 onnxruntime/cpu batch=1 threads=1 on lab1: noisy result (latency CV 0.9"
        " is): not judged, and never a baseline"
    )
    many = {f"m{i}": 1.0 for i in range(4)}
    lines = check_run(store, store_night(store, 13, many, valid=False)).lines()
    assert lines[0].startswith("4 series: noisy results: not judged, and never a baseline (")
    assert len(lines) == 2


def test_not_enough_history_is_one_line_per_series(store: Store) -> None:
    flat_nights(store, 2, a=1.0, b=2.0)
    check = check_run(store, store_night(store, 3, {"a": 1.0, "b": 2.0}))
    assert check.lines() == [
        "a onnx:fp32 onnxruntime/cpu batch=1 threads=1 on lab1: not enough history:"
        " 2 valid results of 5 needed",
        "b onnx:fp32 onnxruntime/cpu batch=1 threads=1 on lab1: not enough history:"
        " 2 valid results of 5 needed",
        "regression check: 0 regression(s), 0 improvement(s) in 0 series judged",
    ]
    assert check.exit_code(0) == 0


def test_a_pinned_run_is_the_baseline(store: Store, tmp_path: Path) -> None:
    runs = flat_nights(store, 3, m=1.0)  # not enough history alone
    cli = CliRunner()
    where = ["--store", str(store.path)]
    pinned = cli.invoke(main, ["baseline", "pin", runs[1][:12], *where])
    assert pinned.exit_code == 0, pinned.output
    assert pinned.output == f"pinned run {runs[1]} as the baseline of suite nightly\n"
    shown = cli.invoke(main, ["baseline", "show", *where])
    assert f"nightly  {runs[1]}" in shown.output

    pinned_p50 = store.records(runs[1], "result")[0].fields["latency_ms_p50"]
    check = check_run(store, store_night(store, 4, {"m": 1.15}))
    p50 = next(v for v in check.verdicts if v.metric == "latency_ms_p50")
    assert p50.state == "regression"
    assert p50.baseline is not None and p50.baseline.pinned == runs[1]
    assert p50.baseline.center == pinned_p50
    assert f"(pinned run {runs[1]})" in p50.message()
    assert check.records[0].fields["pinned_run"] == runs[1]
    assert check_run(store, store_night(store, 5, {"m": pinned_p50})).regressions == []

    unpinned = cli.invoke(main, ["baseline", "unpin", "nightly", *where])
    assert unpinned.exit_code == 0 and runs[1] in unpinned.output
    assert store.pinned("nightly") is None


def test_pinning_a_run_that_does_not_exist_is_one_line_and_exit_2(store: Store) -> None:
    flat_nights(store, 1, m=1.0)
    result = CliRunner().invoke(main, ["baseline", "pin", "20991231", "--store", str(store.path)])
    assert result.exit_code == 2
    assert result.output == (
        f"error: {store.path}: no run matching '20991231'; `fleet results list` shows the run ids\n"
    )


def test_the_minimum_sees_the_work_where_interference_moves_the_p50(store: Store) -> None:
    """A device whose speed drops by a third for whole nights at a time (a neighbour the
    device cannot see): the p50 follows it, the fastest iteration does not. One night's
    p50 rises 40 % with the minimum where it was, and nothing is flagged there; a model
    that does 10 % more work moves the minimum and is flagged on it, not on the p50."""
    slow = [1, 4, 6]  # nights whose whole measurement ran on a slowed core
    for night in range(1, 9):
        p50 = 1.4 if night in slow else 1.0
        store_night(store, night, {"m": p50}, latency_ms_min=0.80 * (1 + 0.001 * (night % 3)))
    interfered = store_night(store, 9, {"m": 1.4}, latency_ms_min=0.801)
    assert check_run(store, interfered, Regressions(), gate=True).regressions == []
    heavier = store_night(store, 10, {"m": 1.1}, latency_ms_min=0.88)
    check = check_run(store, heavier, Regressions(), gate=True)
    assert [v.metric for v in check.regressions] == ["latency_ms_min"]
    assert 9 < check.regressions[0].change_pct < 11


def test_repetitions_that_disagree_widen_the_uncertainty_of_the_p50(store: Store) -> None:
    """The agent's interval over all samples treats them as independent; three workers whose
    p50s differ by a third say what a rerun would move by. The same +12 % is a regression
    when the repetitions agree and not when they do not."""
    flat_nights(store, 8, m=1.0)
    p50 = Regressions(metrics=("latency_ms_p50",))
    run_id = store_night(store, 9, {"m": 1.12}, repetition_p50s_ms="1.12,1.121,1.119")
    assert [v.state for v in check_run(store, run_id, p50, gate=True).verdicts] == ["regression"]
    other = Store(store.path.with_name("other.sqlite"))
    flat_nights(other, 8, m=1.0)
    run_id = store_night(other, 9, {"m": 1.12}, repetition_p50s_ms="0.80,1.12,1.44")
    assert [v.state for v in check_run(other, run_id, p50, gate=True).verdicts] == ["ok"]


@pytest.mark.parametrize(
    ("metric", "agree", "disagree"),
    [
        ("latency_ms_p95", "1.344,1.345,1.343", "0.96,1.344,1.73"),
        ("throughput_ips", "890,891,889", "1190,890,590"),
    ],
)
def test_repetitions_that_disagree_widen_the_uncertainty_of_the_tail_and_throughput(
    tmp_path: Path, metric: str, agree: str, disagree: str
) -> None:
    """The p95 and throughput of one night are weighed by their repetitions' spread as the
    p50 is: a host slow for part of a night moves the night's tail while its workers
    disagree, which is weak evidence of a change; the same move with workers that agree is
    a regression."""
    rules = Regressions(metrics=(metric,))
    listing = {
        "latency_ms_p95": "repetition_p95s_ms",
        "throughput_ips": "repetition_throughputs_ips",
    }
    states = []
    for listed in (agree, disagree):
        store = Store(tmp_path / f"{listed}.sqlite")
        for night, wobble in enumerate(noise(0, 8, 0.01), start=1):
            store_night(store, night, {"m": wobble}, throughput_ips=1000 * wobble)
        # p95 +12 % (1.2 × 1.12) and throughput −11 %: each alone, the other as before.
        changed = {"latency_ms_p95": 1.344, "throughput_ips": 890, listing[metric]: listed}
        run_id = store_night(store, 9, {"m": 1.0}, **changed)
        states += [v.state for v in check_run(store, run_id, rules, gate=True).verdicts]
    assert states == ["regression", "ok"]


def test_a_rerun_within_the_baseline_clears_a_regression_one_that_cannot_judge_does_not(
    store: Store,
) -> None:
    """`settle`: the check of a run against the check of its rerun (regressions.confirm)."""
    flat_nights(store, 8, m=1.0, n=1.0)
    p50 = Regressions(metrics=("latency_ms_p50",))
    night = check_run(store, store_night(store, 9, {"m": 1.3, "n": 1.3}), p50, gate=True)
    assert [v.state for v in night.verdicts] == ["regression", "regression"]
    # The rerun: m back within the baseline; n too noisy to say anything.
    rerun_id = store_night(store, 10, {"m": 1.0})
    store_night(store, 10, {"n": 1.3}, valid=False, invalid_reasons="too noisy")
    rerun = check_run(store, rerun_id, p50, gate=True)
    settled = settle(store, night, rerun)
    assert [(v.series.split()[0], v.state) for v in settled.verdicts] == [
        ("m", "cleared"),
        ("n", "regression"),
    ]
    assert settled.exit_code(0) == 1  # n stands
    lines = settled.lines()
    (cleared,) = [line for line in lines if line.startswith("cleared: ")]
    assert re.fullmatch(
        rf"cleared: m onnx:fp32 .* on lab1: latency_ms_p50 regression \+\d+\.\d% not confirmed:"
        rf" rerun {rerun_id} measured it within the baseline",
        cleared,
    )
    assert lines[-1].endswith(
        "1 regression(s), 0 improvement(s) in 2 series judged, 1 not"
        " confirmed by a rerun (gate on: the run fails)"
    )
    # What the store says of the run goes by the rerun too: its JUnit, report and open ones.
    assert junit_failures(store, night.run_id) == ["n"]
    assert [r.tags["model"] for r in open_regressions(store)] == ["n"]
    report = build_report(store, night.run_id)
    assert [(r.tags["model"], r.fields["direction"]) for r in report.sorted_flags()] == [
        ("n", "regression"),
        ("m", "cleared"),
    ]
    assert '<span class="cleared">cleared</span>' in render_html(report)
    fixed = check_run(store, store_night(store, 11, {"n": 1.0}), p50, gate=True)
    both = settle(store, settled, fixed)
    assert both.regressions == [] and both.exit_code(0) == 0
    assert junit_failures(store, night.run_id) == []
    assert open_regressions(store) == []


def junit_failures(store: Store, run_id: str) -> list[str]:
    """The models of the run's failing JUnit test cases."""
    root = ET.fromstring(to_junit(store.find_run(run_id), store.records(run_id)))
    return [
        str(case.get("name")).split(" of ")[1].split()[0]
        for case in root.iter("testcase")
        if case.find("failure") is not None
    ]


def test_a_rerun_that_does_not_show_an_improvement_clears_it(store: Store) -> None:
    """`settle` weighs improvements as it weighs regressions: one night that was fast by
    chance is not reported as a faster model; one that the rerun measures again stands."""
    flat_nights(store, 8, m=1.0, n=1.0)
    p50 = Regressions(metrics=("latency_ms_p50",))
    night = check_run(store, store_night(store, 9, {"m": 0.8, "n": 0.8}), p50, gate=True)
    assert [v.state for v in night.verdicts] == ["improvement", "improvement"]
    rerun_id = store_night(store, 10, {"m": 1.0, "n": 0.8})
    settled = settle(store, night, check_run(store, rerun_id, p50, gate=True))
    assert [(v.series.split()[0], v.state) for v in settled.verdicts] == [
        ("m", "cleared"),
        ("n", "improvement"),
    ]
    (cleared,) = [line for line in settled.lines() if line.startswith("cleared: ")]
    assert re.fullmatch(
        rf"cleared: m onnx:fp32 .* on lab1: latency_ms_p50 improvement -\d+\.\d% not"
        rf" confirmed: rerun {rerun_id} measured it within the baseline",
        cleared,
    )
    assert settled.lines()[-1] == (
        "regression check: 0 regression(s), 1 improvement(s) in 2 series judged, 1 not"
        " confirmed by a rerun"
    )


def test_open_regressions_until_a_later_valid_result_clears_them(store: Store) -> None:
    flat_nights(store, 8, m=1.0, n=1.0)
    first = store_night(store, 9, {"m": 1.3, "n": 1.3})
    check_run(store, first, gate=True)
    second = store_night(store, 10, {"m": 1.3, "n": 1.0})  # n is fixed, m is not
    check = check_run(store, second, gate=True)
    assert {v.series.split()[0] for v in check.regressions} == {"m"}
    assert {r.fields["since_run"] for r in check.records} == {first}
    still = open_regressions(store)
    assert {(r.tags["model"], r.tags["metric"]) for r in still} == {
        ("m", "latency_ms_p50"),
        ("m", "latency_ms_p95"),
    }
    cli = CliRunner()
    where = ["--since", "60d", "--store", str(store.path)]  # the nights were a month ago
    listed = cli.invoke(main, ["results", "regressions", *where])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].startswith("open regressions flagged in the last 60d")
    assert len(lines) == 2 + 2 and all(first in line for line in lines[2:])
    every = cli.invoke(main, ["results", "regressions", "--all", *where])
    assert len(every.output.splitlines()) == 2 + 4 + 2  # night 9: m and n; night 10: m
    bad = cli.invoke(main, ["results", "regressions", "--since", "week"])
    assert bad.exit_code == 2 and "--since" in bad.output
    # Older than the window: not listed.
    week = cli.invoke(main, ["results", "regressions", "--store", str(store.path)])
    assert week.output.splitlines()[1:] == ["(nothing yet)"]
    assert open_regressions(store, since_ns=time.time_ns()) == []


def test_generation_metrics_are_judged_per_context_length(store: Store) -> None:
    wobble = noise(2, 9, 0.01)
    for night in range(1, 10):
        run_id = f"202611{night:02d}T020000Z-{night:06x}"
        at = time.time_ns() - (40 - night) * DAY_NS
        store.start_run(run_id, "nightly", ["lab1"])
        for context, ttft in ((32, 4.0), (128, 12.0)):
            slower = 1.3 if night == 9 and context == 128 else 1.0
            ttft *= wobble[night - 1] * slower
            fields = {"run_id": run_id, "status": "ok", "valid": True, "ttft_ms": ttft}
            tags = {**TAGS, "model": "gpt", "context_tokens": str(context)}
            store.add(make_record("generation", tags, fields, at + context))
        store.finish_run(run_id, 0)
    check = check_run(store, run_id)
    (regression,) = check.regressions
    assert regression.metric == "ttft_ms" and regression.tags["context_tokens"] == "128"
    assert "gpt onnx:fp32 onnxruntime/cpu batch=1 threads=1 context=128 on lab1" in (
        regression.message()
    )


def test_junit_fails_on_a_gated_regression_and_names_everything(store: Store) -> None:
    flat_nights(store, 8, m=1.0)
    run_id = store_night(store, 9, {"m": 1.25})
    check_run(store, run_id, Regressions(metrics=("latency_ms_p50",)), gate=True)
    root = ET.fromstring(to_junit(store.find_run(run_id), store.records(run_id)))
    assert root.get("tests") == "2" and root.get("failures") == "1"
    (failure,) = root.iter("failure")
    case = next(c for c in root.iter("testcase") if c.find("failure") is not None)
    assert case.get("name") == "latency_ms_p50 of m onnx:fp32 onnxruntime/cpu batch=1 threads=1"
    assert case.get("classname") == "nightly.lab1.regression"
    assert failure.get("type") == "regression"
    message = failure.get("message", "")
    expected = r"latency_ms_p50 1\.250 ms vs baseline 1\.\d+ ± 0\.\d+ ms \(8 runs\): \+2\d\.\d%"
    assert re.search(expected, message), message


def test_an_ungated_regression_is_a_pass_that_says_so(store: Store) -> None:
    flat_nights(store, 8, m=1.0)
    run_id = store_night(store, 9, {"m": 1.25})
    check_run(store, run_id, Regressions(metrics=("latency_ms_p50",)), gate=False)
    root = ET.fromstring(to_junit(store.find_run(run_id), store.records(run_id)))
    assert root.get("failures") == "0"
    assert any("regression (not gated)" in (o.text or "") for o in root.iter("system-out"))


# --- end to end: real runs on the local device -----------------------------------------------


def matmul_chain(path: Path, layers: int, size: int = 256) -> Path:
    """A model that does `layers` 256x256 matrix products per inference: more layers, more
    real work."""
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
    names = ["input", *(f"h{i}" for i in range(layers - 1)), "output"]
    nodes = [helper.make_node("MatMul", [a, "w"], [b]) for a, b in itertools.pairwise(names)]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", size])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


# This machine is shared and busy: the suite accepts what it measures as valid (the
# validity rules are tested elsewhere), and asks for a change of at least 100 %. Two rules
# have no limit to lift: p99 needs 662 samples, and the warm-up must settle within a quarter
# of max_seconds; so the run stops at 700 samples, not at a time a slowed core cannot meet.
E2E_SUITE = """\
name: regress-e2e
measure: {warmup_iterations: 5, min_iterations: 700, max_seconds: 30, repetitions: 1,
          cv_max: 1000, drift_max: 1000, repetition_cv_max: 1000, cpu_wait_max: 1000}
regressions: {history: 3, latency_pct: 100, metrics: [latency_ms_p50]}
models:
  - {name: work, path: %(work)s}
  - {name: steady, path: light.onnx}
"""


@pytest.mark.slow
def test_a_real_slowdown_on_the_local_device_fails_the_run(
    tmp_path: Path, fleet_home: Path
) -> None:
    """Three nights of the light model, then `work` becomes a model with a hundred times the
    layers: that night's run is flagged and exits 1; `steady` is not. With --no-gate the
    next night passes, the regression still open and dated from where it began."""
    matmul_chain(tmp_path / "light.onnx", 2)
    matmul_chain(tmp_path / "heavy.onnx", 200)  # so that no load on this machine hides it
    suite = tmp_path / "suite.yaml"
    db = tmp_path / "results.sqlite"
    cli = CliRunner()

    def night(work: str, *options: str) -> tuple[int, str]:
        suite.write_text(E2E_SUITE % {"work": work})
        result = cli.invoke(main, ["run", str(suite), "--store", str(db), *options])
        return result.exit_code, result.output

    for _ in range(3):
        code, output = night("light.onnx")
        assert code == 0, output
    assert "not enough history: 2 valid results of 3 needed" in output

    code, output = night("heavy.onnx")
    assert code == 1, output
    store = Store(db)
    run = store.find_run(None)
    run_id = run.run_id
    assert run.exit_code == 1  # the stored run says what the gate made of it
    (record,) = store.records(run_id, "regression")
    assert record.tags["model"] == "work" and record.tags["metric"] == "latency_ms_p50"
    assert record.fields["since_run"] == run_id and float(record.fields["change_pct"]) > 100
    assert "regression: work onnx:fp32 onnxruntime/cpu batch=1 threads=1 on local:" in output
    assert "(gate on: the run fails)" in output
    junit = cli.invoke(main, ["results", "export", "--format", "junit", "--store", str(db)])
    assert 'type="regression"' in junit.output

    code, output = night("heavy.onnx", "--no-gate")
    assert code == 0, output
    assert "(gate off)" in output
    listed = cli.invoke(main, ["results", "regressions", "--store", str(db)])
    assert "work onnx:fp32" in listed.output and "steady" not in listed.output
    (still,) = open_regressions(store)
    assert still.fields["since_run"] == run_id and still.fields["gated"] is False
