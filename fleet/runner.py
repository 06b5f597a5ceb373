"""Drive one run: convert, then run every device's part at once, storing each result as it comes.

Devices run in parallel (bounded); on one device the cases run one at a time, in the agent
(`fleet/device_run.py`). A device that fails is reported in the outcome while the others
finish, and a variant that fails to convert is stored as an error while the others run:
partial failure is data, not an exception.
"""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor

from fleet import records
from fleet.agent_build import build_agent
from fleet.artifacts import Artifact, FidelityBudgetError, check_fidelity_budgets, convert
from fleet.connections import Connections
from fleet.device_run import DeviceRun, Prepared, Progress
from fleet.errors import ConversionError, FleetError, Terminated
from fleet.outcome import RunOutcome
from fleet.patience import DEFAULT_PATIENCE, Patience
from fleet.plan import Key, Plan
from fleet.results import lineprotocol
from fleet.results.store import Store

__all__ = [
    "Prepared",
    "Progress",
    "RunOutcome",
    "convert_variants",
    "new_run_id",
    "prepare_artifacts",
    "run_suite",
]


def _quiet(device: str, message: str) -> None:
    """The default progress callback: say nothing."""


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def run_suite(
    plan: Plan,
    store: Store,
    *,
    parallel: int | None = None,
    patience: Patience = DEFAULT_PATIENCE,
    progress: Progress = _quiet,
    connections: Connections | None = None,
) -> RunOutcome:
    """Run the plan on every device at once (at most `parallel` at a time); every record is
    in the store before this returns or raises. Sending the results on to InfluxDB is the
    caller's choice (`fleet.results.influx.push_pending`). `connections` given (the pytest
    plugin's, `Connections(keep=True)`), each device's connection is taken from it and left
    open for the next run; else each lasts its device's part of this run."""
    started = time.monotonic()
    outcome = RunOutcome(new_run_id())
    prepared = convert_variants(plan, progress)
    agent = build_agent()
    names = [dp.device.name for dp in plan.devices]
    links = connections if connections is not None else Connections()
    lineprotocol.load()  # before the device threads store their first records together
    store.start_run(outcome.run_id, plan.suite.name, names)
    try:
        workers = max(1, min(parallel or len(plan.devices), len(plan.devices)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {
                pool.submit(
                    DeviceRun(plan.suite.name, dp, prepared, agent, store, outcome, links).run,
                    patience,
                    progress,
                ): dp.device.name
                for dp in plan.devices
            }
            try:
                for future, name in futures.items():
                    try:
                        future.result()
                    except FleetError as exc:
                        outcome.device_errors[name] = exc
            except KeyboardInterrupt as exc:
                # Stop the agents rather than wait for them; what they sent is stored, and
                # each device's unfinished cases are stored as interrupted.
                outcome.stopped = exc.exit_code if isinstance(exc, Terminated) else 130
                for process in list(outcome.running):
                    process.kill()
                raise
    finally:
        if connections is None:
            links.close()
        summary = records.run_record(
            plan.suite.name,
            outcome.run_id,
            names,
            len(outcome.results),
            len(outcome.failed),
            outcome.exit_code,
            time.monotonic() - started,
        )
        store.add(summary)
        store.finish_run(outcome.run_id, outcome.exit_code)
    return outcome


def convert_variants(plan: Plan, progress: Progress) -> Prepared:
    """Convert every (model, variant) once, before any device time is spent. A variant whose
    conversion already misses a fidelity budget (accuracy_drop_pp, min_cosine, min_snr_db,
    max_abs_error) is refused here; one the converter cannot make is failed, with its
    reason, while the others go on (its cases are stored as errors of kind `conversion`)."""
    artifacts: dict[Key, Artifact] = {}
    refused: dict[Key, str] = {}
    failed: dict[Key, str] = {}
    for case in plan.conversions():
        model, variant = case.model, case.variant
        progress("controller", f"artifact {model.name} {variant}")
        try:
            artifacts[case.key] = convert(
                model.path,
                variant,
                calibration=model.calibration,
                declared=model.declared,
                dataset=model.dataset,
                task=model.task,
            )
        except ConversionError as exc:
            failed[case.key] = f"{model.name} {variant} could not be converted: {exc}"
            progress("controller", f"failed {model.name} {variant}: {exc}")
            continue
        if model.dataset is not None:
            try:
                budgets = {**plan.suite.budgets, **model.budgets}
                check_fidelity_budgets(artifacts[case.key].card, budgets)
            except FidelityBudgetError as exc:
                refused[case.key] = str(exc)
                progress("controller", f"refused {model.name} {variant}: {exc}")
    return Prepared(artifacts, refused, failed)


def prepare_artifacts(plan: Plan, progress: Progress) -> tuple[dict[Key, Artifact], dict[Key, str]]:
    """(artifacts, refused variants with the reason), as `convert_variants`, for a caller
    that needs every variant (`fleet rerun`, the benchmarks): a failed conversion raises."""
    prepared = convert_variants(plan, progress)
    if prepared.failed:
        raise ConversionError(next(iter(prepared.failed.values())))
    return dict(prepared.artifacts), dict(prepared.refused)
