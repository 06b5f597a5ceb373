"""Latency statistics and the validity rules for one timed phase.

Percentiles follow MLPerf LoadGen (``loadgen/results.cc``): the samples are sorted and the
q-th percentile is ``sorted[floor(n * q / 100)]`` (0-based), i.e. always an observed sample,
never an interpolation. For ``n * q / 100`` not an integer this is the textbook nearest rank
(rank ``ceil(n * q / 100)``); when it is an integer LoadGen's rule takes the next sample up,
so a p50 of an even count is the upper of the two middle samples. Reporting a sample that
really happened keeps fleet's p99 comparable with LoadGen's and never optimistic.
"""

import math
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

# MLPerf's early-stopping confidence; see min_samples_for.
_EARLY_STOPPING_CONFIDENCE = 0.99
# Warm-up compares the median of the last ten runs with the ten before.
_STABLE_WINDOW = 10


def percentile(samples_ms: Sequence[float], pct: float) -> float:
    """The pct-th percentile (0 <= pct <= 100) by LoadGen's rule (see module docstring)."""
    if not samples_ms:
        raise ValueError("percentile of no samples")
    if not 0.0 <= pct <= 100.0:
        raise ValueError("percentile {} is outside 0..100".format(pct))
    return _pick(sorted(samples_ms), pct)


def _pick(ordered: Sequence[float], pct: float) -> float:
    return float(ordered[min(len(ordered) - 1, math.floor(len(ordered) * pct / 100.0))])


def median_ci_ranks(n: int, confidence: float = 0.95) -> Tuple[int, int]:
    """1-based ranks (low, high) of the distribution-free confidence interval of the median.

    For any continuous distribution the number of samples below the true median is
    Binomial(n, 1/2), so P(x_(l) <= median <= x_(n-l+1)) = 1 - 2 * P(B <= l - 1). The largest
    l with P(B <= l - 1) <= (1 - confidence) / 2 gives the narrowest interval that still
    covers. Below n = 6 even (min, max) covers less than 95 %; (1, n) is returned then.
    """
    if n < 1:
        raise ValueError("confidence interval of no samples")
    tail = (1.0 - confidence) / 2.0
    i = np.arange(1, n // 2 + 1, dtype=np.float64)
    # log C(n, i) by the recurrence C(n, i) = C(n, i - 1) * (n - i + 1) / i: no overflow
    # for large n, where math.comb / 2**n would not fit a float.
    log_pmf = np.concatenate(([0.0], np.cumsum(np.log((n - i + 1.0) / i)))) - n * math.log(2.0)
    cdf = np.cumsum(np.exp(log_pmf))
    low = max(1, int(np.count_nonzero(cdf <= tail)))
    return low, n - low + 1


def latency_stats(samples_ms: Sequence[float]) -> Dict[str, float]:
    """Summary of per-iteration latencies in milliseconds, as result fields.

    ``latency_ms_std`` is the sample standard deviation (n - 1 in the denominator; 0 for one
    sample) and ``latency_cv`` is std / mean.
    """
    if not samples_ms:
        raise ValueError("latency statistics of no samples")
    values = np.sort(np.asarray(samples_ms, dtype=np.float64))
    n = len(values)
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    low, high = median_ci_ranks(n)
    ordered = values.tolist()
    return {
        "latency_ms_min": float(values[0]),
        "latency_ms_mean": mean,
        "latency_ms_p50": _pick(ordered, 50),
        "latency_ms_p90": _pick(ordered, 90),
        "latency_ms_p95": _pick(ordered, 95),
        "latency_ms_p99": _pick(ordered, 99),
        "latency_ms_max": float(values[-1]),
        "latency_ms_std": std,
        "latency_cv": std / mean if mean > 0 else 0.0,
        "latency_cv_trimmed": _cv(values[: n - n // 100]),
        "latency_p50_ci95_low_ms": float(values[low - 1]),
        "latency_p50_ci95_high_ms": float(values[high - 1]),
    }


def _cv(values: "np.ndarray[Any, Any]") -> float:
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return std / mean if mean > 0 else 0.0


def cv(values: Sequence[float]) -> float:
    """Coefficient of variation (sample std / mean) of a few figures, e.g. per-repetition
    p50s; 0 for fewer than two."""
    return _cv(np.asarray(values, dtype=np.float64))


def drift(samples_ms: Sequence[float]) -> float:
    """Relative change of the median of the last third of a run from the median of its
    first third (+0.1: 10 % slower at the end); 0 with fewer than three samples."""
    third = len(samples_ms) // 3
    if third == 0:
        return 0.0
    first = float(np.median(np.asarray(samples_ms[:third], dtype=np.float64)))
    last = float(np.median(np.asarray(samples_ms[-third:], dtype=np.float64)))
    return (last - first) / first if first > 0 else 0.0


def validity(
    samples_ms: Sequence[float], *, cv_max: float, drift_max: float, throttled: bool
) -> Tuple[bool, List[str]]:
    """Whether a timed phase can be trusted, and why not.

    Invalid when the trimmed coefficient of variation (see ``latency_stats``) is above
    ``cv_max``, when the median of the
    last third of the run differs from the median of the first third by more than
    ``drift_max`` (relative to the first), or when the device throttled during the run.
    Drift needs at least three samples; with fewer it is not judged.
    """
    reasons: List[str] = []
    spread = latency_stats(samples_ms)["latency_cv_trimmed"]
    if spread > cv_max:
        reasons.append("latency CV {:.3f} is above the limit {:.3f}".format(spread, cv_max))
    moved = drift(samples_ms)
    if abs(moved) > drift_max:
        reasons.append(
            "median drifted {:+.1%} from the first third to the last third (limit {:.1%})".format(
                moved, drift_max
            )
        )
    if throttled:
        reasons.append("the device throttled during the run")
    return not reasons, reasons


def min_samples_for(percentile: float) -> int:
    """Fewest samples that can support a claim about the given percentile (0 < p < 100).

    MLPerf LoadGen's early-stopping rule (``loadgen/early_stopping.cc``, single-stream: one
    over-latency query allowed, tolerance 0, confidence 99 %): each sample exceeds the true
    p-th percentile with probability q = 1 - p/100, so the number of such samples is
    Binomial(n, q). With n samples the second-highest one bounds the percentile from above
    with 99 % confidence once P(B <= 1) = (1-q)^n + n q (1-q)^(n-1) <= 0.01. The smallest
    such n is 64 for p90, 130 for p95, 662 for p99, 6636 for p99.9, as LoadGen reports.
    """
    if not 0.0 < percentile < 100.0:
        raise ValueError("percentile {} is outside the open range 0..100".format(percentile))
    p = percentile / 100.0
    q = 1.0 - p
    n = 2
    while p**n + n * q * p ** (n - 1) > 1.0 - _EARLY_STOPPING_CONFIDENCE:
        n += 1
    return n


def is_stable(last_samples: Sequence[float], tol: float) -> bool:
    """Warm-up is over when the median of the last ten runs is within ``tol`` (relative) of
    the median of the ten runs before them. Fewer than twenty runs are never stable."""
    if len(last_samples) < 2 * _STABLE_WINDOW:
        return False
    recent = list(last_samples[-2 * _STABLE_WINDOW :])
    before = float(np.median(recent[:_STABLE_WINDOW]))
    last = float(np.median(recent[_STABLE_WINDOW:]))
    if before <= 0:
        return last == before
    return abs(last - before) / before <= tol
