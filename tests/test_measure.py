"""The timing protocol of one repetition (fleet_agent.measure) on runs of known cost."""

from __future__ import annotations

import os
import time

import pytest

from fleet_agent import measure


def busy(seconds: float):
    """A run that keeps its thread on the CPU for `seconds`, as CPU inference does."""

    def run(_feed: object) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    return run


def sleepy(seconds: float):
    """A run that spends its time off the CPU: to the CPU-wait measure, a neighbour's time."""

    def run(_feed: object) -> None:
        time.sleep(seconds)

    return run


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"min_iterations": 100, "repetitions": 3}, 221),  # 662 for p99, over 3 workers
        ({"min_iterations": 100, "repetitions": 1}, 662),
        ({"min_iterations": 1000, "repetitions": 3}, 1000),
        ({"min_iterations": 10, "repetitions": 5}, 133),
    ],
)
def test_target_iterations_cover_p99_over_all_repetitions(settings, expected):
    assert measure.target_iterations(settings) == expected


def test_timed_phase_reaches_the_p99_sample_count_and_min_seconds():
    got = measure.timed(busy(0.0002), None, {"min_iterations": 10, "repetitions": 3}, 1)
    assert len(got.samples_ms) == 221
    assert all(s >= 0.2 for s in got.samples_ms)

    start = time.perf_counter()
    got = measure.timed(busy(0.0002), None, {"min_iterations": 10, "min_seconds": 0.3}, 1)
    assert time.perf_counter() - start >= 0.3
    assert got.duration_s >= 0.3 and len(got.samples_ms) > 662


def test_timed_phase_is_capped_by_max_seconds():
    got = measure.timed(busy(0.002), None, {"min_iterations": 10_000, "max_seconds": 0.2}, 1)
    assert 0.2 <= got.duration_s < 0.3
    assert 50 < len(got.samples_ms) <= 101


def test_cpu_wait_tells_a_cpu_bound_run_from_time_off_the_cpu():
    on_cpu = measure.timed(busy(0.001), None, {"min_iterations": 1, "max_seconds": 0.2}, 1)
    off_cpu = measure.timed(sleepy(0.001), None, {"min_iterations": 1, "max_seconds": 0.2}, 1)
    assert off_cpu.cpu_wait_frac > 0.8
    # On a quiet core on_cpu waits ~0; other tests sharing this machine's two cores can
    # take up to two thirds of it, still well apart from sleeping.
    assert on_cpu.cpu_wait_frac < off_cpu.cpu_wait_frac - 0.15


def test_cpu_wait_counts_threads_the_run_cannot_keep_busy():
    # One busy thread measured as if it were four: three quarters of the CPU time is missing.
    got = measure.timed(busy(0.001), None, {"min_iterations": 1, "max_seconds": 0.2}, 4)
    assert got.cpu_wait_frac > 0.6


def test_usable_threads_zero_means_every_allowed_core():
    assert measure.usable_threads(3) == 3
    assert measure.usable_threads(0) == len(os.sched_getaffinity(0))


def test_warmup_meets_both_minimums_then_stops_when_stable():
    got = measure.warmup(busy(0.0005), None, {"warmup_iterations": 30, "warmup_seconds": 0.05})
    assert got.stable
    assert got.runs >= 30 and got.seconds >= 0.05


def test_warmup_runs_on_while_the_median_moves_up_to_its_limit():
    calls = []

    def slowing(_feed: object) -> None:
        calls.append(1)
        busy(0.0001 * len(calls))(None)  # every run slower than the last: never settles

    got = measure.warmup(slowing, None, {"warmup_iterations": 5, "max_seconds": 0.8})
    assert not got.stable
    # A quarter of max_seconds (plus the run under way, and whatever else this shared
    # machine runs); settling would take over 2 s.
    assert 0.2 <= got.seconds < 1.0


def test_warmup_that_settles_late_is_stable():
    calls = []

    def settling(_feed: object) -> None:
        calls.append(1)
        # Slow first runs getting faster, as a GPU's clocks and caches come up.
        busy(0.0005 + 0.0001 * max(0, 40 - len(calls)))(None)

    got = measure.warmup(settling, None, {"warmup_iterations": 10, "max_seconds": 20})
    assert got.stable
    assert 40 <= got.runs < 70
