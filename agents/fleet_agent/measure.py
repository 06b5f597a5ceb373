"""The timing protocol of one repetition: warm-up, then the timed phase.

Both loops call ``run(feed)`` on inputs made before them (seeded, already in the model's
types), time each call with ``time.perf_counter_ns`` and keep nothing else in the loop, so
the figures are the runtime's and not the agent's (see bench/agent_overhead.py).
"""

import math
import os
import time
from typing import Any, Callable, List, NamedTuple, Tuple

from fleet_agent import stats
from fleet_agent.protocol import Settings

# The highest percentile reported: the timed phase aims at enough samples to support it.
TOP_PERCENTILE = 99.0


class Warmup(NamedTuple):
    runs: int
    seconds: float
    stable: bool  # False: stopped by its time limit before the median settled


class Timed(NamedTuple):
    samples_ms: List[float]
    duration_s: float
    cpu_wait_frac: float


def _runs(
    run: Callable[[Any], Any], feed: Any, enough: Callable[[List[float], float], bool]
) -> Tuple[List[float], float]:
    """Latencies in ms of ``run(feed)``, until ``enough(samples, elapsed_s)``; and the
    elapsed seconds. Nothing but the call sits between the two clock reads."""
    samples: List[float] = []
    clock = time.perf_counter_ns
    start = clock()
    while True:
        t0 = clock()
        run(feed)
        t1 = clock()
        samples.append((t1 - t0) / 1e6)
        elapsed = (t1 - start) / 1e9
        if enough(samples, elapsed):
            return samples, elapsed


def warmup(run: Callable[[Any], Any], feed: Any, settings: Settings) -> Warmup:
    """At least ``warmup_iterations`` runs and ``warmup_seconds``, then on until the median of
    the last ten runs is within 5 % of the ten before (GPU clocks and caches take a while),
    but no longer than a quarter of ``max_seconds`` (or four times ``warmup_seconds``)."""
    min_runs = settings["warmup_iterations"]
    min_s = settings["warmup_seconds"]
    limit_s = max(min_s * 4, settings["max_seconds"] / 4)

    def enough(samples: List[float], elapsed: float) -> bool:
        if len(samples) < min_runs or elapsed < min_s:
            return False
        return elapsed >= limit_s or stats.is_stable(samples, tol=0.05)

    samples, elapsed = _runs(run, feed, enough)
    return Warmup(len(samples), elapsed, stats.is_stable(samples, tol=0.05))


def target_iterations(settings: Settings) -> int:
    """Runs one repetition aims at: ``min_iterations``, and at least its share of the
    samples the top percentile needs over all repetitions (662 for p99)."""
    share = math.ceil(stats.min_samples_for(TOP_PERCENTILE) / settings["repetitions"])
    return max(settings["min_iterations"], share)


def timed(run: Callable[[Any], Any], feed: Any, settings: Settings) -> Timed:
    """Latencies in ms until ``target_iterations`` and ``min_seconds`` are both reached,
    capped by ``max_seconds``; and the share of the phase the worker waited for a CPU.

    The wait is 1 - (process CPU time) / (wall time × threads): a CPU-bound run keeps its
    threads on a core the whole time, so what is missing went to other processes (a busy
    neighbour on the same core) or to too many threads for the cores it may use.
    """
    target = target_iterations(settings)
    min_s = settings["min_seconds"]
    max_s = settings["max_seconds"]

    def enough(samples: List[float], elapsed: float) -> bool:
        return (len(samples) >= target and elapsed >= min_s) or elapsed >= max_s

    cpu_start = time.process_time_ns()
    samples, elapsed = _runs(run, feed, enough)
    cpu_s = (time.process_time_ns() - cpu_start) / 1e9
    wall_s = max(elapsed, 1e-9)
    wait = 1.0 - cpu_s / (wall_s * usable_threads(settings["threads"]))
    return Timed(samples, elapsed, min(1.0, max(0.0, wait)))


def usable_threads(threads: int) -> int:
    """Threads a run can keep busy: the setting, or (0: the runtime's choice) every core
    this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return threads if threads > 0 else max(1, cores or 1)
