"""The timing protocol of one repetition (fleet_agent.measure).

Its rules (how many runs, when a phase stops, what share of the time was spent waiting for
a CPU) are tested on a clock the runs themselves advance, so every count and every
duration is exact however busy this machine is. On the real clocks, only what no load can
change is asserted: the minimums are met, a run off the CPU is waiting, a neighbour pinned
on the same core takes its share. How fast anything runs is for bench/, not for tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from fleet.suite import MEASURE_DEFAULTS
from fleet_agent import measure, stats
from fleet_agent.protocol import Settings

P99 = stats.min_samples_for(99)  # 662: what the timed phase promises over all repetitions


def settings(**overrides: Any) -> Settings:
    """Every setting, as the controller sends them: the suite's defaults under `overrides`."""
    assert set(overrides) <= set(MEASURE_DEFAULTS), set(overrides) - set(MEASURE_DEFAULTS)
    return cast(Settings, {**MEASURE_DEFAULTS, **overrides})


class Clock:
    """Stands in for the `time` module in fleet_agent.measure: a run costs exactly what the
    test says, in wall time and in this process's CPU time, and nothing else moves."""

    def __init__(self) -> None:
        self.wall_ns = 0
        self.cpu_ns = 0

    def perf_counter_ns(self) -> int:
        return self.wall_ns

    def process_time_ns(self) -> int:
        return self.cpu_ns

    def run(self, ms: float | Callable[[], float], on_cpu: float = 1.0) -> Callable[[Any], None]:
        """A run of `ms` milliseconds (or what `ms()` says, call by call), `on_cpu` of it
        on this process's CPU time."""

        def run(_feed: object) -> None:
            cost = round((ms() if callable(ms) else ms) * 1e6)
            self.wall_ns += cost
            self.cpu_ns += round(cost * on_cpu)

        return run


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(measure, "time", fake)
    return fake


def busy(seconds: float) -> Callable[[Any], None]:
    """A run that keeps its thread on the CPU for `seconds` of wall time, as CPU inference
    does; on a busy machine it is also on the CPU for less than that."""

    def run(_feed: object) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    return run


def sleepy(seconds: float) -> Callable[[Any], None]:
    """A run that spends its time off the CPU: to the CPU-wait measure, a neighbour's time."""

    def run(_feed: object) -> None:
        time.sleep(seconds)

    return run


# ---------------------------------------------------------------- how many runs


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"min_iterations": 100, "repetitions": 3}, 221),  # 662 for p99, over 3 workers
        ({"min_iterations": 100, "repetitions": 1}, 662),
        ({"min_iterations": 1000, "repetitions": 3}, 1000),
        ({"min_iterations": 10, "repetitions": 5}, 133),
    ],
)
def test_target_iterations_cover_p99_over_all_repetitions(overrides, expected):
    assert measure.target_iterations(settings(**overrides)) == expected


def test_timed_phase_stops_at_the_p99_share_once_min_seconds_is_reached(clock):
    got = measure.timed(clock.run(0.2), None, settings(min_iterations=10, repetitions=3))
    assert len(got.samples_ms) == 221  # 3 x 221 >= 662
    assert got.samples_ms == [pytest.approx(0.2)] * 221
    assert got.duration_s == pytest.approx(221 * 0.2e-3)

    # 662 runs take 0.17 s: min_seconds keeps it going to 0.3 s, and no further.
    overrides = {"min_iterations": 10, "repetitions": 1, "min_seconds": 0.3}
    got = measure.timed(clock.run(0.25), None, settings(**overrides))
    assert len(got.samples_ms) == 1200 and got.duration_s == pytest.approx(0.3)


def test_timed_phase_is_capped_by_max_seconds(clock):
    overrides = {"min_iterations": 10_000, "max_seconds": 0.2}
    got = measure.timed(clock.run(2.0), None, settings(**overrides))
    assert len(got.samples_ms) == 100 and got.duration_s == pytest.approx(0.2)


def test_timed_phase_on_the_real_clock_meets_both_minimums():
    got = measure.timed(busy(0.0002), None, settings(min_iterations=10, repetitions=3))
    assert len(got.samples_ms) == 221
    assert all(s >= 0.2 for s in got.samples_ms)  # each run took at least its 0.2 ms

    start = time.perf_counter()
    overrides = {"min_iterations": 10, "repetitions": 1, "min_seconds": 0.3}
    got = measure.timed(busy(0.0002), None, settings(**overrides))
    assert time.perf_counter() - start >= 0.3
    # At least what p99 needs: exactly that many when the runs were slow enough (a busy
    # machine) to fill min_seconds on their own.
    assert got.duration_s >= 0.3 and len(got.samples_ms) >= P99


def test_timed_phase_on_the_real_clock_stops_at_max_seconds():
    got = measure.timed(busy(0.002), None, settings(min_iterations=10_000, max_seconds=0.2))
    assert got.duration_s >= 0.2
    assert len(got.samples_ms) <= 100  # every run takes 2 ms or more
    # It stopped at the first run that ended past the cap: the ones before fit within it.
    assert sum(got.samples_ms[:-1]) < 200


# ---------------------------------------------------------------- waiting for a CPU


@pytest.mark.parametrize(
    ("on_cpu", "threads", "wait"),
    [
        (1.0, 1, 0.0),  # a CPU-bound run alone on its core
        (0.0, 1, 1.0),  # all of it off the CPU
        (0.5, 1, 0.5),  # a neighbour as busy as the run, on the same core
        (1.0, 4, 0.75),  # one busy thread where four were asked for
        (2.0, 4, 0.5),  # two of four
        (2.0, 1, 0.0),  # more CPU than wall (threads the setting did not count): not below 0
    ],
)
def test_cpu_wait_is_the_share_of_the_threads_time_off_the_cpu(clock, on_cpu, threads, wait):
    got = measure.timed(clock.run(1.0, on_cpu), None, settings(min_iterations=200, threads=threads))
    assert got.cpu_wait_frac == pytest.approx(wait)


def test_cpu_wait_on_the_real_clock_sees_time_off_the_cpu():
    # Load only adds to the wait, so these hold however busy the machine is.
    off_cpu = measure.timed(sleepy(0.001), None, settings(min_iterations=1, max_seconds=0.2))
    assert off_cpu.cpu_wait_frac > 0.8
    # One busy thread measured as if it were four: three quarters of the CPU time is missing.
    one_of_four = measure.timed(
        busy(0.001), None, settings(min_iterations=1, max_seconds=0.2, threads=4)
    )
    assert one_of_four.cpu_wait_frac > 0.6


@pytest.fixture
def pinned_with_two_hogs() -> Iterator[int]:
    """This thread and two CPU hogs on one core: the hogs take at least two thirds of it,
    and any other work on that core takes more, never less."""
    core = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    code = "import sys; print(flush=True); sys.stdout.close()\nwhile True: pass"
    hogs = [
        subprocess.Popen(
            ["taskset", "-c", str(core), sys.executable, "-c", code], stdout=subprocess.PIPE
        )
        for _ in range(2)
    ]
    try:
        for hog in hogs:
            assert hog.stdout is not None
            hog.stdout.readline()  # it is in its loop
        os.sched_setaffinity(0, {core})
        yield core
    finally:
        os.sched_setaffinity(0, before)
        for hog in hogs:
            hog.kill()
            hog.wait()


def test_cpu_wait_on_the_real_clock_counts_a_neighbour_on_the_same_core(pinned_with_two_hogs):
    got = measure.timed(busy(0.001), None, settings(min_iterations=1, min_seconds=0.5))
    assert got.cpu_wait_frac > 0.3  # about 2/3 or more; 0.1 is the default limit


def test_usable_threads_zero_means_every_allowed_core():
    assert measure.usable_threads(3) == 3
    assert measure.usable_threads(0) == len(os.sched_getaffinity(0))


# ---------------------------------------------------------------- warm-up


def test_warmup_meets_both_minimums_then_stops_when_stable(clock):
    got = measure.warmup(clock.run(0.5), None, settings(warmup_iterations=30, warmup_seconds=0.05))
    assert got.stable
    assert got.runs == 100 and got.seconds == pytest.approx(0.05)  # 0.05 s of 0.5 ms runs

    got = measure.warmup(clock.run(0.5), None, settings(warmup_iterations=30, warmup_seconds=0))
    assert got.stable and got.runs == 30


def test_warmup_on_the_real_clock_meets_both_minimums():
    overrides = {"warmup_iterations": 30, "warmup_seconds": 0.05, "max_seconds": 0.8}
    got = measure.warmup(busy(0.0005), None, settings(**overrides))
    assert got.runs >= 30 and got.seconds >= 0.05  # stable or not, as the machine allows


def test_warmup_runs_on_while_the_median_moves_up_to_its_limit(clock):
    calls = []

    def slowing() -> float:
        calls.append(1)
        return 0.1 * len(calls)  # every run slower than the last: never settles

    got = measure.warmup(clock.run(slowing), None, settings(warmup_iterations=5, max_seconds=0.8))
    assert not got.stable
    # A quarter of max_seconds: 63 runs of 0.1, 0.2, ... 6.3 ms are the first past 0.2 s.
    assert got.runs == len(calls) == 63
    assert got.seconds == pytest.approx(0.1e-3 * 63 * 64 / 2)


def test_warmup_that_settles_late_is_stable(clock):
    calls = []

    def settling() -> float:
        calls.append(1)
        # Slow first runs getting faster, as a GPU's clocks and caches come up.
        return 0.5 + 0.1 * max(0, 40 - len(calls))

    got = measure.warmup(clock.run(settling), None, settings(warmup_iterations=10, max_seconds=20))
    assert got.stable
    # The first window of ten whose median is within 5 % of the ten before: runs 46-55
    # (0.5 ms) after runs 36-45 (median 0.5 ms), well before the 5 s limit.
    assert got.runs == 55
