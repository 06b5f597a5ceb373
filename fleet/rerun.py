"""`fleet rerun RUN`: the cases of an earlier run, again, to confirm or clear a regression.

A rerun is honest only when everything but the moment is the same, so each run keeps what it
ran (`RunSpec`, in the store's `run_specs` table, written by the CLI): the suite file and its
sha256, the sha256 of every data set and calibration file, the agent's sha256, the inventory
and the selection. A rerun refuses when the suite, a data file or the agent changed since;
loads the same suite and inventory; keeps only the devices and the cases that have a result in
that run; converts (the artifact cache answers with the same files) and refuses unless every
artifact has the model_sha256 that run recorded and every case the same settings.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from fleet.agent_build import build_agent
from fleet.artifacts.cache import sha256_file
from fleet.errors import ConfigError
from fleet.inventory import load_inventory
from fleet.outcome import RunOutcome
from fleet.plan import Case, DevicePlan, Plan, make_plan
from fleet.records import DeviceContext, tags
from fleet.regressions.check import Check, check_run, regression_record
from fleet.results.record import Record, tag
from fleet.results.store import RunInfo, Store
from fleet.runner import Progress, prepare_artifacts
from fleet.suite import Regressions, Suite, load_suite

# A result's identity in its run: (device, model, variant as converted, shape). A result
# stored before results had a `variant` tag reads as format:precision (fleet.results.record.tag).
Identity = tuple[str, str, str, str]
# The tags a case's settings and device decide; a rerun must give each the same value.
SETTING_TAGS = ("device_class", "batch", "threads", "provider_options", "gpu")


def _quiet(device: str, message: str) -> None:
    """The default progress callback: say nothing."""


@dataclass(frozen=True)
class RunSpec:
    """What a run ran, kept with it so that `fleet rerun` can run exactly that again."""

    suite: str  # the suite file, absolute
    suite_sha256: str
    agent_sha256: str
    data: Mapping[str, str] = field(default_factory=dict)  # data set, calibration: sha256
    inventory: str | None = None  # absolute; None: no inventory (only `local`)
    devices: str | None = None  # the selection as given (--devices); None: the default
    parallel: int | None = None
    rerun_of: str | None = None  # the run this one reran, if it is a rerun

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "data": dict(self.data)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], where: str) -> RunSpec:
        text = ("suite", "suite_sha256", "agent_sha256")
        optional = ("inventory", "devices", "rerun_of")
        data = raw.get("data", {})
        parallel = raw.get("parallel")
        if (
            not all(isinstance(raw.get(key), str) for key in text)
            or not all(isinstance(raw.get(key), str | None) for key in optional)
            or not isinstance(data, dict)
            or not all(isinstance(v, str) for v in data.values())
            or not (parallel is None or (isinstance(parallel, int) and parallel > 0))
        ):
            raise ConfigError(
                f"{where}: the rerun record is damaged; run the suite with `fleet run`"
            )
        return cls(
            suite=raw["suite"],
            suite_sha256=raw["suite_sha256"],
            agent_sha256=raw["agent_sha256"],
            data=dict(data),
            inventory=raw.get("inventory"),
            devices=raw.get("devices"),
            parallel=parallel,
            rerun_of=raw.get("rerun_of"),
        )


def run_spec(
    suite: Suite,
    inventory: Path | None,
    devices: str | None,
    parallel: int | None = None,
    rerun_of: str | None = None,
) -> RunSpec:
    """The spec of a run about to start: hash the suite's files and the agent now, before
    the run, so an edit during a long run does not pass for what ran."""
    return RunSpec(
        suite=str(suite.path.resolve()),
        suite_sha256=sha256_file(suite.path),
        agent_sha256=build_agent().sha256,
        data=_data_files(suite),
        inventory=None if inventory is None else str(inventory.resolve()),
        devices=devices,
        parallel=parallel,
        rerun_of=rerun_of,
    )


def _data_files(suite: Suite) -> dict[str, str]:
    files = {p for m in suite.models for p in (m.dataset, m.calibration) if p is not None}
    return {str(path.resolve()): sha256_file(path) for path in sorted(files)}


@dataclass(frozen=True)
class Rerun:
    run: RunInfo  # the run to run again
    spec: RunSpec  # the rerun's own spec (rerun_of: that run)
    plan: Plan  # its devices and its cases, nothing else

    @property
    def cases(self) -> int:
        return sum(len(dp.cases) for dp in self.plan.devices)


def plan_rerun(
    store: Store,
    run_id: str,
    *,
    inventory: Path | None = None,
    devices: str | None = None,
    only: Collection[Identity] | None = None,
    progress: Progress = _quiet,
) -> Rerun:
    """The plan that runs the cases of `run_id` (a unique prefix will do) again, on its devices
    (those of them `devices` selects, if given; of its results, those `only` names), from the
    same suite, artifacts and agent. Converts what the plan needs (the cache has it) to check
    the artifacts' sha256."""
    run = store.find_run(run_id)
    raw = store.run_spec(run.run_id)
    if raw is None:
        raise ConfigError(
            f"run {run.run_id} cannot be rerun: the store does not say what it ran (a run stopped"
            " before it ended, or one made by an older fleet); run its suite with `fleet run`"
        )
    old = RunSpec.from_json(raw, f"{store.path}: run {run.run_id}")
    suite_path = Path(old.suite)
    _same_file(suite_path, old.suite_sha256, run.run_id, "suite")
    for path, sha in old.data.items():
        _same_file(Path(path), sha, run.run_id, "data file")
    agent = build_agent()
    if agent.sha256 != old.agent_sha256:
        raise ConfigError(
            f"agent changed since run {run.run_id}; rerun needs the same agent: agent-"
            f"{old.agent_sha256[:12]}.pyz then, {agent.name} now; use the fleet that made the run"
        )
    suite = load_suite(suite_path)
    inventory = inventory or (Path(old.inventory) if old.inventory else None)
    if inventory is not None and not inventory.exists():
        raise ConfigError(
            f"{inventory}: the inventory of run {run.run_id} is gone; give --inventory"
        )
    inv = load_inventory(inventory)
    names = list(run.devices)
    if devices is not None:
        selected = {device.name for device in inv.select(devices.split(","))}
        names = [name for name in names if name in selected]
        if not names:
            raise ConfigError(
                f"run {run.run_id} ran on {', '.join(run.devices)}; none of them is in"
                f" --devices {devices!r}"
            )
    missing = [name for name in names if name not in inv.devices]
    if missing:
        where = inventory or "the built-in inventory (only `local`)"
        raise ConfigError(
            f"run {run.run_id} ran on {', '.join(missing)}, not in {where}; give --inventory"
            " with them, or --devices without them"
        )
    results = store.records(run.run_id, "result")
    before: dict[Identity, list[Record]] = {}
    for record in results:
        if only is None or _identity(record.tags) in only:
            before.setdefault(_identity(record.tags), []).append(record)
    plan = _only(make_plan(suite, [inv.devices[name] for name in names]), before)
    if not any(dp.cases for dp in plan.devices):
        raise ConfigError(f"run {run.run_id} has no results on {', '.join(names)} to rerun")
    artifacts, _refused = prepare_artifacts(plan, progress)
    problems = []
    for device_plan in plan.devices:
        for case in device_plan.cases:
            problem = _differs(suite, device_plan, case, artifacts[case.key].sha256, before)
            if problem:
                problems.append(problem)
    if problems:
        raise ConfigError(
            f"run {run.run_id} cannot be rerun the same: {'; '.join(problems[:3])}"
            + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        )
    spec = RunSpec(
        suite=old.suite,
        suite_sha256=old.suite_sha256,
        agent_sha256=old.agent_sha256,
        data=old.data,
        inventory=None if inventory is None else str(inventory.resolve()),
        devices=",".join(names),
        parallel=old.parallel,
        rerun_of=run.run_id,
    )
    return Rerun(run, spec, plan)


def confirm(
    store: Store, check: Check, rules: Regressions, run: Callable[[Rerun], RunOutcome]
) -> Check:
    """Measure the cases of the check's regressions and improvements again, `rules.confirm`
    times at most (each a rerun, stored as one, that `run` runs): a flagged change stays only
    while every rerun shows it again; the others are reported `cleared`, naming the rerun that
    did not. A change of the model is there each time; a host that was slow (or idle) for a
    while is not."""
    for _ in range(rules.confirm):
        flagged = {_identity(v.tags) for v in check.verdicts if v.flagged}
        if not flagged:
            break
        again = plan_rerun(store, check.run_id, only=flagged)
        outcome = run(again)
        store.set_run_spec(outcome.run_id, again.spec.to_json())
        check = settle(store, check, check_run(store, outcome.run_id, rules, gate=check.gate))
    return check


def settle(store: Store, check: Check, rerun: Check) -> Check:
    """The check with each regression and improvement that the rerun's check judged otherwise
    (within the baseline, or the other way) made `cleared`, with what the rerun measured; each
    is stored as a `regression` record of the run with direction `cleared`, which the run's
    JUnit, report and open regressions go by (fleet.results.record.settled). A rerun that
    failed, or was too noisy to judge, confirms nothing either way: the change stands."""
    judged = {
        (v.series, v.metric): v
        for v in rerun.verdicts
        if v.state in ("ok", "regression", "improvement")
    }
    measured = {
        "ok": "within the baseline",
        "regression": "as a regression",
        "improvement": "as an improvement",
    }
    verdicts = []
    for v in check.verdicts:
        again = judged.get((v.series, v.metric))
        if v.flagged and again is not None and again.state != v.state:
            note = f"{v.metric} {v.state} {v.change_pct:+.1f}% not confirmed: rerun"
            v = replace(
                v,
                state="cleared",
                note=f"{note} {rerun.run_id} measured it {measured[again.state]}",
                value=again.value,
                change_pct=again.change_pct,
                time_ns=again.time_ns,
            )
            store.add(regression_record(v, check.run_id, check.gate))
        verdicts.append(v)
    return replace(check, verdicts=verdicts)


def _same_file(path: Path, sha256: str, run_id: str, what: str) -> None:
    try:
        now = sha256_file(path)
    except OSError as exc:
        raise ConfigError(
            f"{what} of run {run_id} is gone; rerun needs the same {what}: {path}"
            f" ({exc.strerror or exc})"
        ) from None
    if now != sha256:
        raise ConfigError(
            f"{what} changed since run {run_id}; rerun needs the same {what}: {path} has"
            f" sha256 {now[:12]} now, {sha256[:12]} then; restore it, or `fleet run` it as it is"
        )


def _identity(found: Mapping[str, str]) -> Identity:
    return (found["device"], found["model"], tag(found, "variant"), found.get("shape", ""))


def _case_identity(device: str, case: Case) -> Identity:
    return (device, case.model.name, case.series_variant, case.shape_tag or "")


def _only(plan: Plan, before: Mapping[Identity, Sequence[Record]]) -> Plan:
    """The plan with only the devices and cases that have a result in the earlier run."""
    devices = []
    for device_plan in plan.devices:
        name = device_plan.device.name
        cases = tuple(c for c in device_plan.cases if _case_identity(name, c) in before)
        if cases:
            devices.append(DevicePlan(device_plan.device, cases))
    return Plan(plan.suite, tuple(devices))


def _differs(
    suite: Suite,
    device_plan: DevicePlan,
    case: Case,
    sha256: str,
    before: Mapping[Identity, Sequence[Record]],
) -> str:
    """Why this case would not be the one the earlier run measured; empty when it would."""
    device = device_plan.device
    records = before[_case_identity(device.name, case)]
    same = [r for r in records if r.fields.get("model_sha256") == sha256]
    if not same:
        then = ", ".join(sorted({str(r.fields.get("model_sha256", "?"))[:12] for r in records}))
        return (
            f"{case.id} on {device.name} converts to model_sha256 {sha256[:12]} now, was {then}"
            " (the model file or the converter changed)"
        )
    now = tags(DeviceContext(suite.name, "", device), case)
    for key in SETTING_TAGS:
        # provider_options and gpu are tags only where set: absent on both sides is the same.
        if same[0].tags.get(key) != now.get(key):
            return (
                f"{case.id} on {device.name} has {key} {now.get(key, '(none)')} now, was"
                f" {same[0].tags.get(key, '(none)')} (the inventory changed)"
            )
    return ""
