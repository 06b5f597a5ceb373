import math
import random

import numpy as np
import pytest

from fleet_agent import stats


def shuffled(values):
    values = list(values)
    random.Random(7).shuffle(values)
    return values


@pytest.mark.parametrize(
    ("values", "pct", "expected"),
    [
        # n * q not an integer: nearest rank ceil(n * q).
        (range(1, 8), 50, 4.0),  # 3.5 -> index 3
        (range(1, 8), 90, 7.0),  # 6.3 -> index 6
        (range(1, 8), 10, 1.0),  # 0.7 -> index 0
        # n * q an integer: LoadGen takes the next sample up.
        (range(1, 11), 50, 6.0),
        (range(1, 11), 90, 10.0),
        (range(1, 21), 95, 20.0),
        (range(1, 101), 99, 100.0),
        (range(1, 101), 90, 91.0),
        (range(1, 1001), 99, 991.0),
        (range(1, 11), 0, 1.0),
        (range(1, 11), 100, 10.0),
        ([42.5], 99, 42.5),
    ],
)
def test_percentile_is_loadgens_sample_index(values, pct, expected):
    assert stats.percentile(shuffled(values), pct) == expected


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError, match="no samples"):
        stats.percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        stats.percentile([1.0], 101)


def test_latency_stats_hand_computed():
    # sorted: 2 4 4 4 5 5 7 9; sum 40; squared deviations sum to 32.
    got = stats.latency_stats(shuffled([2, 4, 4, 4, 5, 5, 7, 9]))
    std = math.sqrt(32 / 7)
    assert got == {
        "latency_ms_min": 2.0,
        "latency_ms_mean": 5.0,
        "latency_ms_p50": 5.0,  # index 4
        "latency_ms_p90": 9.0,  # index 7
        "latency_ms_p95": 9.0,
        "latency_ms_p99": 9.0,
        "latency_ms_max": 9.0,
        "latency_ms_std": pytest.approx(std),
        "latency_cv": pytest.approx(std / 5),
        # fewer than 100 samples: nothing is trimmed.
        "latency_cv_trimmed": pytest.approx(std / 5),
        # n = 8: P(B <= 0) = 1/256 <= 2.5 % < P(B <= 1) = 9/256, so ranks 1 and 8.
        "latency_p50_ci95_low_ms": 2.0,
        "latency_p50_ci95_high_ms": 9.0,
    }
    assert all(type(v) is float for v in got.values())


def test_trimmed_cv_leaves_out_what_is_above_p99():
    # 1000 samples: 10 interrupt-length outliers make the plain CV huge; the slowest 1 %
    # (10 samples) are left out of the trimmed one, which sees the steady rest.
    samples = [1.0, 1.2] * 495 + [100.0] * 10
    got = stats.latency_stats(shuffled(samples))
    assert got["latency_cv"] > 3
    body = np.array([1.0, 1.2] * 495)
    assert got["latency_cv_trimmed"] == pytest.approx(body.std(ddof=1) / body.mean())
    # 11 outliers: one is left in.
    got = stats.latency_stats(shuffled([1.0] * 989 + [100.0] * 11))
    assert got["latency_cv_trimmed"] > 1


def test_cv_of_repetition_p50s():
    assert stats.cv([1.0, 1.0, 1.0]) == 0.0
    assert stats.cv([2.0]) == 0.0
    assert stats.cv([9.0, 10.0, 11.0]) == pytest.approx(0.1)


def test_latency_stats_single_sample():
    got = stats.latency_stats([3.0])
    assert got["latency_ms_std"] == 0.0
    assert got["latency_cv"] == 0.0
    assert got["latency_p50_ci95_low_ms"] == got["latency_p50_ci95_high_ms"] == 3.0


def test_latency_stats_needs_samples():
    with pytest.raises(ValueError, match="no samples"):
        stats.latency_stats([])


@pytest.mark.parametrize(
    ("n", "ranks"),
    # Published tables of the order-statistic interval for the median (e.g. Conover,
    # Practical Nonparametric Statistics): n=6 -> (1, 6), n=10 -> (2, 9), n=100 -> (40, 61).
    [(1, (1, 1)), (5, (1, 5)), (6, (1, 6)), (10, (2, 9)), (25, (8, 18)), (100, (40, 61))],
)
def test_median_ci_ranks_table(n, ranks):
    assert stats.median_ci_ranks(n) == ranks


def exact_tail(n, k):
    """P(Binomial(n, 1/2) <= k), exact with integers."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


@pytest.mark.parametrize("n", [*range(6, 80), 500, 2001])
def test_median_ci_ranks_is_narrowest_covering_interval(n):
    low, high = stats.median_ci_ranks(n)
    assert high == n - low + 1
    assert 1 - 2 * exact_tail(n, low - 1) >= 0.95
    assert 1 - 2 * exact_tail(n, low) < 0.95  # one rank narrower would not cover


def test_median_ci_covers_true_median_about_95_percent():
    rng = np.random.default_rng(3)
    draws = rng.exponential(size=(4000, 50))
    true_median = math.log(2)
    low, high = stats.median_ci_ranks(50)
    ordered = np.sort(draws, axis=1)
    covered = (ordered[:, low - 1] <= true_median) & (true_median <= ordered[:, high - 1])
    assert 0.95 <= covered.mean() <= 0.985  # exact coverage for n=50 is 96.7 %


def test_median_ci_large_n_is_fast_and_near_normal_approximation():
    low, high = stats.median_ci_ranks(1_000_000)
    half_width = 1.96 * math.sqrt(1_000_000) / 2
    assert abs((500_000 - low) - half_width) < 2
    assert high == 1_000_000 - low + 1


def test_validity_steady_run_is_valid():
    samples = [10.0 + 0.1 * (i % 3) for i in range(90)]
    assert stats.validity(samples, cv_max=0.05, drift_max=0.05, throttled=False) == (True, [])


def test_validity_noise_is_invalid():
    samples = [10.0, 30.0] * 45  # mean 20, sample std sqrt(90 * 100 / 89) = 10.06
    valid, reasons = stats.validity(samples, cv_max=0.1, drift_max=0.05, throttled=False)
    assert not valid
    assert reasons == ["latency CV 0.503 is above the limit 0.100"]


def test_validity_drift_is_invalid():
    # The first third at 10 ms, the last third at 11 ms: +10 % drift.
    samples = [10.0] * 30 + [10.5] * 30 + [11.0] * 30
    valid, reasons = stats.validity(samples, cv_max=1.0, drift_max=0.05, throttled=False)
    assert not valid
    assert reasons == ["median drifted +10.0% from the first third to the last third (limit 5.0%)"]
    assert stats.validity(samples, cv_max=1.0, drift_max=0.15, throttled=False) == (True, [])


def test_validity_drift_counts_speed_ups_too():
    samples = [12.0] * 10 + [10.0] * 10
    valid, reasons = stats.validity(samples, cv_max=1.0, drift_max=0.05, throttled=False)
    assert not valid
    assert "-16.7%" in reasons[0]


def test_validity_throttling_is_invalid():
    valid, reasons = stats.validity([5.0] * 10, cv_max=0.1, drift_max=0.1, throttled=True)
    assert not valid
    assert reasons == ["the device throttled during the run"]


def test_validity_two_samples_skip_drift():
    assert stats.validity([5.0, 50.0], cv_max=10.0, drift_max=0.0, throttled=False) == (True, [])


def overlatency_odds(n, pct):
    p = pct / 100
    return p**n + n * (1 - p) * p ** (n - 1)


@pytest.mark.parametrize(("pct", "n"), [(50, 11), (90, 64), (95, 130), (99, 662), (99.9, 6636)])
def test_min_samples_for_matches_loadgen(pct, n):
    assert stats.min_samples_for(pct) == n
    assert overlatency_odds(n, pct) <= 0.01 < overlatency_odds(n - 1, pct)


@pytest.mark.parametrize("pct", [0, 100, -1, 150])
def test_min_samples_for_rejects_out_of_range(pct):
    with pytest.raises(ValueError, match="outside"):
        stats.min_samples_for(pct)


def test_is_stable_needs_twenty_runs():
    assert not stats.is_stable([1.0] * 19, tol=0.5)
    assert stats.is_stable([1.0] * 20, tol=0.0)


def test_is_stable_compares_last_ten_with_ten_before():
    warming = [50.0] * 30 + [11.0] * 10 + [10.0] * 10
    assert not stats.is_stable(warming, tol=0.05)  # 10 vs 11: 9.1 % apart
    assert stats.is_stable(warming, tol=0.10)
    # Runs before the last twenty do not matter.
    assert stats.is_stable([50.0] * 30 + [10.0] * 20, tol=0.0)


def test_is_stable_ignores_one_outlier_in_the_window():
    window = [10.0] * 9 + [90.0] + [10.0] * 10
    assert stats.is_stable(window, tol=0.01)
