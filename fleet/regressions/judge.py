"""One series' new result against its history: the reference level, the baseline, the
99 % prediction interval and the minimum effect, and the verdict."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fleet.regressions.changepoints import change_points
from fleet.regressions.series import METRICS, Metric, Point
from fleet.suite import Regressions

# Two-sided 99 % prediction interval: Student's t quantile 0.995 for 1..29 degrees of
# freedom; from 30 on, its Cornish-Fisher expansion (within 1e-4 of the exact value there).
_T995 = (
    63.657, 9.925, 5.841, 4.604, 4.032, 3.707, 3.499, 3.355, 3.250, 3.169,
    3.106, 3.055, 3.012, 2.977, 2.947, 2.921, 2.898, 2.878, 2.861, 2.845,
    2.831, 2.819, 2.807, 2.797, 2.787, 2.779, 2.771, 2.763, 2.756,
)  # fmt: skip
_Z995 = 2.5758293035489
# The most recent valid results of a series that change-point detection looks at: about
# four months of nights, so a check stays well under a second per hundred series.
MAX_HISTORY = 120


def t_quantile(df: int) -> float:
    """Student's t 0.995 quantile (two-sided 99 %) for `df` degrees of freedom; normal for 0."""
    if df <= 0:
        return _Z995
    if df <= len(_T995):
        return _T995[df - 1]
    z = _Z995
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


@dataclass(frozen=True)
class Baseline:
    center: float
    spread: float  # night-to-night standard deviation (0 when not known)
    runs: int  # how many results it was drawn from
    df: int  # degrees of freedom of `spread`; 0: only the measured intervals count
    pinned: str = ""  # the pinned run it is, if any
    sigma: float = 0.0  # the pinned result's own standard error


@dataclass(frozen=True)
class Verdict:
    """What the check says about one metric of one series (or the series as a whole, for
    `noisy` and `history`, with metric "")."""

    metric: str
    state: str  # regression, improvement, ok, history (not enough), noisy; cleared: a
    # regression or improvement that a rerun did not show again (fleet.rerun.confirm)
    value: float | None = None
    baseline: Baseline | None = None
    change_pct: float = 0.0
    since_run: str = ""
    note: str = ""
    series: str = ""  # the series' name, filled in by check_run
    tags: Mapping[str, str] = field(default_factory=dict)
    time_ns: int = 0

    @property
    def flagged(self) -> bool:
        return self.state in ("regression", "improvement")

    def message(self) -> str:
        if not self.flagged or self.baseline is None or self.value is None:
            return f"{self.series}: {self.note}" if self.series else self.note
        metric = METRICS[self.metric]
        base = self.baseline
        change = f"{self.change_pct:+.1f}%"
        if metric.effect == "accuracy_pp":
            change += f", {100 * (self.value - base.center):+.2f} pp"
        against = f"pinned run {base.pinned}" if base.pinned else f"{base.runs} runs"
        # Four significant digits of the baseline, and the spread to the same decimals.
        digits = max(0, 3 - math.floor(math.log10(abs(base.center)))) if base.center else 4
        return (
            f"{self.series}: {self.metric} {self.value:.{digits}f}{metric.unit} vs baseline"
            f" {base.center:.{digits}f} ± {base.spread:.{digits}f}{metric.unit} ({against}):"
            f" {change}, since run {self.since_run}"
        )


def _min_effect(metric: Metric, rules: Regressions) -> float:
    return float(getattr(rules, metric.effect))


def _effect(metric: Metric, value: float, center: float) -> tuple[float, float]:
    """(change in % of the baseline, size in the unit of the minimum effect)."""
    pct = (value - center) / abs(center) * 100 if center else 0.0  # 0: no percentage of 0
    if metric.effect == "accuracy_pp":
        return pct, abs(value - center) * 100
    return pct, abs(pct)


def _classify(metric: Metric, point: Point, base: Baseline, rules: Regressions) -> str:
    """regression, improvement or ok: outside the 99 % prediction interval and at least the
    minimum effect."""
    diff = point.value - base.center
    if diff == 0 or (base.center <= 0 and metric.effect != "accuracy_pp"):
        return "ok"  # no percentage of a zero (or meaningless negative) baseline
    # A baseline mean of n nights misses by spread/sqrt(n); a pinned run by a whole night's.
    center_var = base.spread**2 if base.pinned else base.spread**2 / max(base.runs, 1)
    variance = base.spread**2 + center_var + point.sigma**2 + base.sigma**2
    significant = abs(diff) > t_quantile(base.df) * math.sqrt(variance)
    _, size = _effect(metric, point.value, base.center)
    if not (significant and size >= _min_effect(metric, rules)):
        return "ok"
    return "regression" if (diff > 0) == metric.higher_is_worse else "improvement"


def _baseline(
    values: Sequence[float], prior: Sequence[float], rules: Regressions
) -> Baseline | None:
    """The mean and spread of the last `window` accepted values; right after a confirmed
    improvement, with fewer than `history` of them, the spread is pooled with the previous
    level's (a shift of level does not reset the noise)."""
    recent = list(values[-rules.window :])
    n = len(recent)
    if n >= rules.history:
        return Baseline(_mean(recent), math.sqrt(_squares(recent) / (n - 1)), n, n - 1)
    earlier = list(prior[-rules.window :])
    if n == 0 or len(earlier) < 2:
        return None
    df = len(earlier) - 1 + n - 1
    return Baseline(_mean(recent), math.sqrt((_squares(earlier) + _squares(recent)) / df), n, df)


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _squares(values: Sequence[float]) -> float:
    """Σ (x − mean)²; plain Python: the windows are short, and numpy's overhead is not."""
    mean = _mean(values)
    return math.fsum((v - mean) ** 2 for v in values)


@dataclass
class _Replay:
    accepted: list[Point] = field(default_factory=list)
    # The flagged results at the end of the range, each with its direction.
    streak: list[tuple[Point, str]] = field(default_factory=list)


def _replay(
    points: Sequence[Point], prior: Sequence[float], metric: Metric, rules: Regressions
) -> _Replay:
    """Judge each result of the reference level as it came, keeping only those not flagged:
    the baseline is made of ordinary nights."""
    replay = _Replay()
    for point in points:
        base = _baseline([p.value for p in replay.accepted], prior, rules)
        state = "ok" if base is None else _classify(metric, point, base, rules)
        if state == "ok":
            replay.accepted.append(point)
            replay.streak = []
        else:
            replay.streak.append((point, state))
    return replay


def judge(
    history: Sequence[Point],
    new: Point,
    metric: Metric,
    rules: Regressions,
    pinned: Point | None = None,
) -> Verdict:
    """The new result of one series and metric against its history (valid results only,
    oldest first) or against the pinned run's result."""
    history = list(history)[-MAX_HISTORY:]
    points = [*history, new]
    values = [p.value for p in points]
    starts = [0, *change_points(values), len(points)]
    segments = list(itertools.pairwise(starts))

    # The reference level: the first, or a later one better by at least the minimum effect.
    reference = 0
    for index in range(1, len(segments)):
        level = float(np.mean(values[slice(*segments[index])]))
        level_before = float(np.mean(values[slice(*segments[reference])]))
        better = (level < level_before) == metric.higher_is_worse
        if better and _effect(metric, level, level_before)[1] >= _min_effect(metric, rules):
            reference = index
    ref_start, ref_end = segments[reference]
    prior = values[slice(*segments[reference - 1])] if reference else []
    replay = _replay(points[ref_start : min(ref_end, len(history))], prior, metric, rules)
    base = _baseline([p.value for p in replay.accepted], prior, rules)

    if pinned is not None:
        spread, df = (base.spread, base.df) if base is not None else (0.0, 0)
        runs = base.runs if base is not None else 0
        base = Baseline(pinned.value, spread, runs, df, pinned.run_id, pinned.sigma)
    if base is None:
        return Verdict(
            metric.name,
            "history",
            new.value,
            note=f"not enough history: {len(replay.accepted)} valid results of"
            f" {rules.history} needed",
        )
    state = _classify(metric, new, base, rules)
    pct, _ = _effect(metric, new.value, base.center)
    since = new.run_id
    if state != "ok":
        since = _since(points, segments, reference, replay, base, state).run_id
    return Verdict(metric.name, state, new.value, base, pct, since)


def _since(
    points: Sequence[Point],
    segments: Sequence[tuple[int, int]],
    reference: int,
    replay: _Replay,
    base: Baseline,
    state: str,
) -> Point:
    """Where the shift the new result shows began: the earliest of the change-point segments
    that end with the new result's own and lie on its side of the baseline; earlier still when
    results flagged the same way came right before that (the change point was placed a night
    late, or the shift is too young to be a segment); else the new result itself."""
    new = points[-1]
    first = len(points) - 1
    for start, end in reversed(segments[reference + 1 :]):
        if not _apart(points[start:end], base, new.value > base.center):
            break
        first = start
    streak: list[Point] = []
    for flagged, flagged_state in reversed(replay.streak):
        if flagged_state != state:
            break
        streak.insert(0, flagged)
    if streak and first > 0 and streak[-1] is points[first - 1]:
        return streak[0]
    return points[first]


def _apart(points: Sequence[Point], base: Baseline, above: bool) -> bool:
    """Whether a segment's mean is off the baseline on that side, beyond the 99 % interval of
    a difference of two means (a segment that merely wobbles is not where a shift began)."""
    diff = float(np.mean([p.value for p in points])) - base.center
    if diff == 0 or (diff > 0) != above:
        return False
    spread = base.spread * math.sqrt(1 / len(points) + 1 / max(base.runs, 1))
    return abs(diff) > t_quantile(base.df) * spread
