"""Baselines and regression detection: each series' new result against its own history.

A series is one case on one device (`SERIES_TAGS`, plus `context_tokens` for a `generation`
record). For each watched metric (`fleet.suite.REGRESSION_METRICS`) the newest valid result
is compared with a baseline:

- the baseline is the mean of the series' last `window` valid results (`history` of them at
  least) that belong to its reference level, or the value of a pinned run
  (`fleet baseline pin RUN`);
- the reference level is found by change-point detection over the whole valid history
  (E-Divisive means, `change_points`): it is the first level, replaced only by a later one that
  is better by at least the minimum effect (a confirmed improvement). A level that is worse
  never becomes the reference by itself: a regression stays open until it is fixed, or
  accepted by pinning a run;
- within the reference level, results that were themselves flagged when they came are left
  out of the baseline (`_replay`), so a regression's first nights never dilute it;
- a change is flagged when it is outside the Student-t prediction interval of the baseline
  (99 %: night-to-night spread and the new result's own confidence interval) AND at least
  the suite's minimum effect (`regressions: {latency_pct, memory_pct, accuracy_pp}`);
- `since_run` is where the shift began: the start of the change-point segment the new result
  lies in (or of the run of flagged results just before it).

Only valid results (`valid` true, status ok) are judged or become baselines. docs/regressions.md
explains the choices; bench/nightly_series.py measures them on a lab.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from fleet.results.record import Record, make_record
from fleet.results.store import Store
from fleet.results.tables import format_table, when
from fleet.suite import REGRESSION_METRICS, Regressions
from fleet_agent.stats import min_samples_for

# What identifies a series, besides `context_tokens` of a generation record.
SERIES_TAGS = (
    "suite",
    "device",
    "model",
    "format",
    "precision",
    "runtime",
    "provider",
    "threads",
    "batch",
)
GENERATION_METRICS = ("ttft_ms", "decode_tokens_per_s")

# Two-sided 99 % prediction interval: Student's t quantile 0.995 for 1..29 degrees of
# freedom; from 30 on, its Cornish-Fisher expansion (within 1e-4 of the exact value there).
_T995 = (
    63.657, 9.925, 5.841, 4.604, 4.032, 3.707, 3.499, 3.355, 3.250, 3.169,
    3.106, 3.055, 3.012, 2.977, 2.947, 2.921, 2.898, 2.878, 2.861, 2.845,
    2.831, 2.819, 2.807, 2.797, 2.787, 2.779, 2.771, 2.763, 2.756,
)  # fmt: skip
_Z995 = 2.5758293035489
_Z975 = 1.959963984540054  # the agent's confidence intervals are 95 %

# E-Divisive: permutations per test, their significance level, the shortest segment.
PERMUTATIONS = 199
CHANGE_ALPHA = 0.01
MIN_SEGMENT = 3
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
class Metric:
    name: str
    effect: str  # the `regressions:` key of its minimum effect
    higher_is_worse: bool
    measurement: str = "result"
    min_samples: int = 0  # a percentile is judged only with enough samples for it
    ci: tuple[str, str] | None = None  # the agent's 95 % confidence interval of the value

    @property
    def unit(self) -> str:
        for part, unit in (("_ms", " ms"), ("_mb", " MB"), ("tokens_per_s", " tokens/s")):
            if part in self.name:
                return unit
        return "/s" if self.name.endswith("_ips") else ""


_PERCENTILES = {"latency_ms_p95": 95.0, "latency_ms_p99": 99.0}
METRICS: dict[str, Metric] = {
    name: Metric(
        name,
        effect,
        worse,
        "generation" if name in GENERATION_METRICS else "result",
        min_samples_for(_PERCENTILES[name]) if name in _PERCENTILES else 0,
        ("latency_p50_ci95_low_ms", "latency_p50_ci95_high_ms")
        if name == "latency_ms_p50"
        else None,
    )
    for name, (effect, worse) in REGRESSION_METRICS.items()
}


@dataclass(frozen=True)
class Point:
    """One valid result of a series for one metric."""

    run_id: str
    time_ns: int
    value: float
    sigma: float = 0.0  # its own standard error, from the agent's confidence interval


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
    state: str  # regression, improvement, ok, history (not enough), noisy
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


def change_points(
    values: Sequence[float],
    *,
    alpha: float = CHANGE_ALPHA,
    permutations: int = PERMUTATIONS,
    min_size: int = MIN_SEGMENT,
    seed: int = 0,
) -> list[int]:
    """Where the distribution of `values` changes: the indices at which new segments start.

    E-Divisive means (Matteson and James, 2014; as in Apache Otava and MongoDB's
    signal-processing-algorithms): the split of a segment that maximises the energy distance
    between its two sides, kept when a permutation test within the segment says it is
    significant at `alpha`; repeated, best split first, until one is not. Deterministic for a
    given `seed`. Permutations go in batches, and a test stops as soon as enough of them beat
    it to make it fail, so a flat series costs one batch.
    """
    x = np.asarray(values, dtype=np.float64)
    found: list[int] = []
    rng = np.random.default_rng(seed)
    most_beaten = math.floor(alpha * (permutations + 1)) - 1  # p = (beaten + 1) / (R + 1)
    while True:
        bounds = [0, *sorted(found), len(x)]
        best: tuple[int, int, int, float] | None = None  # (start, end, split, statistic)
        for start, end in itertools.pairwise(bounds):
            if end - start < 2 * min_size:
                continue
            stats = _split_statistics(x[None, start:end], min_size)[0]
            split = int(np.argmax(stats))
            if best is None or stats[split] > best[3]:
                best = (start, end, start + min_size + split, float(stats[split]))
        if best is None or best[3] <= 0:
            return sorted(found)
        start, end, split, statistic = best
        beaten, tried = 0, 0
        while tried < permutations:
            batch = min(_BATCH, permutations - tried)
            shuffled = rng.permuted(np.broadcast_to(x[start:end], (batch, end - start)), axis=1)
            beaten += int((_split_statistics(shuffled, min_size).max(axis=1) >= statistic).sum())
            tried += batch
            if beaten > most_beaten:
                return sorted(found)
        found.append(split)


_BATCH = 25  # permutations computed together


def _split_statistics(segments: np.ndarray, min_size: int) -> np.ndarray:
    """For each row of `segments`, the E-Divisive statistic of every split τ into m = τ and
    k = n − τ values (each side ≥ min_size):
    q(τ) = m·k/n · (2·mean|x−y| − mean|x−x'| − mean|y−y'|)."""
    n = segments.shape[1]
    distances = np.abs(segments[:, :, None] - segments[:, None, :])
    # Σ d[:m, :n] and Σ d[:m, :m] (= twice the sum below the diagonal) for every m.
    rows = np.cumsum(distances.sum(axis=2), axis=1)
    below = 2 * np.cumsum(np.tril(distances, -1).sum(axis=2), axis=1)
    m = np.arange(min_size, n - min_size + 1)
    k = n - m
    left = below[:, m - 1]
    cross = rows[:, m - 1] - left
    right = rows[:, n - 1][:, None] - 2 * rows[:, m - 1] + left
    energy = 2 * cross / (m * k) - left / (m * (m - 1)) - right / (k * (k - 1))
    result: np.ndarray = m * k / n * energy
    return result


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


def series_key(record: Record) -> tuple[str, ...]:
    key = tuple(record.tags.get(name, "") for name in SERIES_TAGS)
    return (*key, record.tags.get("context_tokens", ""))


def series_name(tags: Mapping[str, str]) -> str:
    """digits_cnn onnx:fp32 onnxruntime/cpu batch=1 threads=1 on local (context=32)."""
    t = {k: tags.get(k, "?") for k in SERIES_TAGS}
    name = (
        f"{t['model']} {t['format']}:{t['precision']} {t['runtime']}/{t['provider']}"
        f" batch={t['batch']} threads={t['threads']}"
    )
    if "context_tokens" in tags:
        name += f" context={tags['context_tokens']}"
    return f"{name} on {t['device']}"


def is_valid(record: Record) -> bool:
    """A result that may be judged and may become a baseline."""
    return record.status == "ok" and record.fields.get("valid") is True


def point(record: Record, metric: Metric) -> Point | None:
    """The record's value of the metric, or None when it has none to judge (not measured,
    not finite, or too few samples for the percentile)."""
    value = record.number(metric.name)
    if value is None or not math.isfinite(value):
        return None
    if metric.min_samples and (record.number("iterations") or 0.0) < metric.min_samples:
        return None
    sigma = 0.0
    if metric.ci is not None:
        low, high = (record.number(name) for name in metric.ci)
        if low is not None and high is not None and high >= low:
            sigma = (high - low) / (2 * _Z975)
    return Point(record.run_id, record.time_ns, value, sigma)


NOISY_HINT = "`fleet results show` marks them, their invalid_reasons say why"


@dataclass
class Check:
    """The regression check of one run: a verdict per series and metric, and the records of
    the regressions and improvements it stored."""

    run_id: str
    gate: bool
    verdicts: list[Verdict] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)

    @property
    def regressions(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.state == "regression"]

    @property
    def improvements(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.state == "improvement"]

    def exit_code(self, run_exit_code: int) -> int:
        """The run's exit code with the gate: a regression makes a passing run exit 1."""
        if self.gate and self.regressions and run_exit_code == 0:
            return 1
        return run_exit_code

    def lines(self) -> list[str]:
        """For the terminal: each regression and improvement, the notes, one summary."""
        lines = [f"{v.state}: {v.message()}" for v in self.verdicts if v.flagged]
        notes: dict[str, list[str]] = {}
        for v in self.verdicts:
            if v.state == "history":
                notes.setdefault(v.note, []).append(v.series)
        noisy = [v for v in self.verdicts if v.state == "noisy"]
        if len(noisy) > 3:  # each with its own reasons: one line for them all
            notes[f"noisy results: not judged, and never a baseline ({NOISY_HINT})"] = [
                v.series for v in noisy
            ]
        else:
            notes.update({v.note: [v.series] for v in noisy})
        for note, series in notes.items():
            if len(series) <= 3:
                lines += [f"{name}: {note}" for name in series]
            else:
                lines.append(f"{len(series)} series: {note}")
        judged = {v.series for v in self.verdicts if v.state not in ("history", "noisy")}
        summary = (
            f"regression check: {len(self.regressions)} regression(s),"
            f" {len(self.improvements)} improvement(s) in {len(judged)} series judged"
        )
        if self.regressions:
            summary += " (gate on: the run fails)" if self.gate else " (gate off)"
        return [*lines, summary]


def check_run(
    store: Store, run_id: str, rules: Regressions | None = None, *, gate: bool = False
) -> Check:
    """Judge every series of the run (a unique prefix will do) against its history in the
    store; store a `regression` record for each regression and improvement (once: checking a
    run again adds nothing twice). `gate` only says what the exit code will be."""
    rules = rules or Regressions()
    run = store.find_run(run_id)
    check = Check(run.run_id, gate)
    measurements = sorted({METRICS[m].measurement for m in rules.metrics} | {"result"})
    history: dict[tuple[str, ...], list[Record]] = {}
    new: list[Record] = []
    for measurement in measurements:
        for record in store.records(measurement=measurement):
            if record.tags.get("suite") != run.suite:
                continue
            if record.run_id == run.run_id:
                new.append(record)
            elif is_valid(record):
                history.setdefault(series_key(record), []).append(record)
    for records in history.values():
        records.sort(key=lambda r: r.time_ns)
    pinned = store.pinned(run.suite)
    pinned_records: dict[tuple[str, ...], Record] = {}
    if pinned is not None and pinned != run.run_id:
        for record in store.records(pinned):
            if record.measurement in measurements and is_valid(record):
                pinned_records[series_key(record)] = record
    for record in sorted(new, key=lambda r: r.time_ns):
        check.verdicts += _judge_record(record, history, pinned_records, rules)
    done = {(series_key(r), r.tags.get("metric")) for r in store.records(run.run_id, "regression")}
    for verdict in check.verdicts:
        if verdict.flagged:
            record = regression_record(verdict, run.run_id, gate)
            check.records.append(record)
            if (series_key(record), verdict.metric) not in done:
                store.add(record)
    return check


def _judge_record(
    record: Record,
    history: Mapping[tuple[str, ...], Sequence[Record]],
    pinned: Mapping[tuple[str, ...], Record],
    rules: Regressions,
) -> list[Verdict]:
    def named(verdict: Verdict) -> Verdict:
        return replace(
            verdict, series=series_name(record.tags), tags=record.tags, time_ns=record.time_ns
        )

    if record.status != "ok":
        return []  # a failed case is the budgets' and findings' business, not a level
    if not is_valid(record):
        reasons = str(record.fields.get("invalid_reasons", "")) or "marked not valid"
        reasons = reasons if len(reasons) <= 120 else reasons[:117] + "..."
        note = f"noisy result ({reasons}): not judged, and never a baseline"
        return [named(Verdict("", "noisy", note=note))]
    key = series_key(record)
    before = [r for r in history.get(key, ()) if r.time_ns < record.time_ns]
    verdicts = []
    for name in rules.metrics:
        metric = METRICS[name]
        if metric.measurement != record.measurement:
            continue
        new = point(record, metric)
        if new is None:
            continue
        past = [p for p in (point(r, metric) for r in before) if p is not None]
        reference = pinned.get(key)
        pin = point(reference, metric) if reference is not None else None
        verdicts.append(named(judge(past, new, metric, rules, pin)))
    if verdicts and all(v.state == "history" for v in verdicts):
        # One note for the series, not one per metric.
        return [replace(verdicts[0], metric="")]
    return [v for v in verdicts if v.state != "history"] or verdicts


def regression_record(verdict: Verdict, run_id: str, gate: bool) -> Record:
    """Measurement `regression`: the series' tags and `metric`; its time is the judged
    result's, so that a dashboard's annotation sits on the point it is about."""
    base = verdict.baseline
    assert base is not None and verdict.value is not None
    fields: dict[str, object] = {
        "run_id": run_id,
        "baseline": base.center,
        "spread": base.spread,
        "baseline_runs": base.runs,
        "value": verdict.value,
        "change_pct": verdict.change_pct,
        "direction": verdict.state,
        "since_run": verdict.since_run,
        "message": verdict.message(),
        "gated": gate,
    }
    if base.pinned:
        fields["pinned_run"] = base.pinned
    tags = {**verdict.tags, "metric": verdict.metric}
    return make_record("regression", tags, fields, verdict.time_ns)


def gating(declared: Regressions | None, option: bool | None) -> bool:
    """`--gate/--no-gate` when given, else on exactly when the suite declares `regressions:`
    (and does not say `gate: false`)."""
    if option is not None:
        return option
    return declared is not None and declared.gate


def open_regressions(store: Store, since_ns: int = 0) -> list[Record]:
    """The regressions not yet fixed: for each series and metric, the latest `regression`
    record, when it is a regression flagged since `since_ns` and no valid result of that
    series came after it (a later valid result was judged, and was not flagged)."""
    latest: dict[tuple[tuple[str, ...], str], Record] = {}
    for record in store.records(measurement="regression"):
        key = (series_key(record), record.tags.get("metric", ""))
        if key not in latest or record.time_ns >= latest[key].time_ns:
            latest[key] = record
    last_valid: dict[tuple[str, ...], int] = {}
    for measurement in ("result", "generation"):
        for record in store.records(measurement=measurement):
            if is_valid(record):
                key_ = series_key(record)
                last_valid[key_] = max(last_valid.get(key_, 0), record.time_ns)
    found = [
        r
        for (series, _), r in latest.items()
        if r.fields.get("direction") == "regression"
        and r.time_ns >= since_ns
        and last_valid.get(series, 0) <= r.time_ns
    ]
    return sorted(found, key=lambda r: r.time_ns)


def flagged(store: Store, since_ns: int = 0) -> list[Record]:
    """Every regression and improvement flagged since `since_ns`, oldest first."""
    found = [r for r in store.records(measurement="regression") if r.time_ns >= since_ns]
    return sorted(found, key=lambda r: r.time_ns)


def regressions_table(records: Iterable[Record], title: str) -> str:
    columns = ["flagged (UTC)", "direction", "series", "metric", "baseline", "spread", "value"]
    rows = [
        [
            when(r.time_ns),
            str(r.fields.get("direction", "")),
            series_name(r.tags),
            r.tags.get("metric", "?"),
            _cell(r.number("baseline")),
            _cell(r.number("spread")),
            _cell(r.number("value")),
            _cell(r.number("change_pct"), "+.1f"),
            str(r.fields.get("since_run", "")),
        ]
        for r in records
    ]
    return format_table([*columns, "change %", "since run"], rows, title)


def _cell(value: float | None, fmt: str = ".4g") -> str:
    return "-" if value is None else format(value, fmt)


SINCE_UNITS: dict[str, int] = {"m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_since(text: str, now: Callable[[], int] = time.time_ns) -> int:
    """'7d', '12h', '30m', '2w' -> that long before now, in ns since the epoch."""
    number, unit = text[:-1], text[-1:]
    if unit not in SINCE_UNITS or not number.isdigit():
        raise ValueError(f"{text!r}: use a number and a unit, such as 7d, 12h, 30m or 2w")
    return now() - int(number) * SINCE_UNITS[unit] * 10**9
