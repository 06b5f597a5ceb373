"""The regression check of a stored run: every series judged, a `regression` record stored
for each regression and improvement, and what the gate makes of the exit code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from fleet.regressions.judge import Verdict, judge
from fleet.regressions.series import METRICS, is_valid, point, series_key, series_name
from fleet.results.record import Record, make_record
from fleet.results.store import Store
from fleet.suite import Regressions

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
        lines += [f"cleared: {v.message()}" for v in self.verdicts if v.state == "cleared"]
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
        cleared = sum(v.state == "cleared" for v in self.verdicts)
        summary = (
            f"regression check: {len(self.regressions)} regression(s),"
            f" {len(self.improvements)} improvement(s) in {len(judged)} series judged"
            + (f", {cleared} not confirmed by a rerun" if cleared else "")
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
