"""Drive one run: convert, push, run the agent on every device, store each result at once.

Devices run in parallel (bounded); on one device the cases run one at a time, in the agent.
A device that fails is reported in the outcome while the others finish: partial failure is
data, not an exception. What to build and what to store are pure functions elsewhere
(`fleet/job.py`, `fleet/records.py`); this module connects, sends, converses and dispatches.
"""

from __future__ import annotations

import json
import posixpath
import secrets
import signal
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fleet import records
from fleet.agent_build import AgentApp, build_agent
from fleet.artifacts import Artifact, FidelityBudgetError, check_fidelity_budgets, convert
from fleet.errors import DeviceError, FleetError, Terminated
from fleet.job import DeviceJob, build_job
from fleet.patience import BUSY_POLL_S, DEFAULT_PATIENCE, RETRIED, Patience
from fleet.plan import Case, DevicePlan, Key, Plan
from fleet.results import lineprotocol
from fleet.results.record import ERRORS, FINDINGS, Record
from fleet.results.store import Store
from fleet.transport import Process, Transport, connect
from fleet_agent import protocol

# An agent silent this long is hung (it sends a heartbeat every protocol.HEARTBEAT_S), and
# so is the device or the connection under it.
SILENCE_S = 6 * protocol.HEARTBEAT_S

Progress = Callable[[str, str], None]  # (device, message)


def _quiet(device: str, message: str) -> None:
    """The default progress callback: say nothing."""


@dataclass
class RunOutcome:
    run_id: str
    records: list[Record] = field(default_factory=list)
    # The devices that failed, each with its exception (kind, device and message).
    device_errors: dict[str, FleetError] = field(default_factory=dict)
    running: list[Process] = field(default_factory=list, repr=False)  # agents at work now
    stopped: int | None = None  # the exit code of a run stopped by a signal (130, 143)

    @property
    def results(self) -> list[Record]:
        return [r for r in self.records if r.measurement == "result"]

    @property
    def failed(self) -> list[Record]:
        """Results that break the run's promise: findings, errors and broken budgets."""
        return [
            r
            for r in self.results
            if r.status in FINDINGS + ERRORS or r.fields.get("passed") is False
        ]

    @property
    def exit_code(self) -> int:
        if self.stopped is not None:
            return self.stopped
        statuses = {r.status for r in self.results}
        # Nothing measured at all (every case skipped) is no pass: the devices lack runtimes.
        nothing_ran = statuses == {"skipped"}
        if self.device_errors or statuses & set(ERRORS) or nothing_ran:
            return 2
        if self.failed:
            return 1
        return 0


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def run_suite(
    plan: Plan,
    store: Store,
    *,
    parallel: int | None = None,
    patience: Patience = DEFAULT_PATIENCE,
    progress: Progress = _quiet,
) -> RunOutcome:
    """Run the plan on every device at once (at most `parallel` at a time); every record is
    in the store before this returns or raises. Sending the results on to InfluxDB is the
    caller's choice (`fleet.results.influx.push_pending`)."""
    started = time.monotonic()
    outcome = RunOutcome(new_run_id())
    artifacts, refused = prepare_artifacts(plan, progress)
    agent = build_agent()
    names = [dp.device.name for dp in plan.devices]
    lineprotocol.load()  # before the device threads store their first records together
    store.start_run(outcome.run_id, plan.suite.name, names)
    try:
        workers = max(1, min(parallel or len(plan.devices), len(plan.devices)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {
                pool.submit(
                    DeviceRun(plan.suite.name, dp, artifacts, refused, agent, store, outcome).run,
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
                        progress(name, f"ERROR {exc}")
            except KeyboardInterrupt as exc:
                # Stop the agents rather than wait for them; what they sent is stored, and
                # each device's unfinished cases are stored as interrupted.
                outcome.stopped = exc.exit_code if isinstance(exc, Terminated) else 130
                for process in list(outcome.running):
                    process.kill()
                raise
    finally:
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


def prepare_artifacts(plan: Plan, progress: Progress) -> tuple[dict[Key, Artifact], dict[Key, str]]:
    """Convert every (model, variant) once, before any device time is spent. A variant whose
    conversion already misses a fidelity budget (accuracy_drop_pp, min_cosine, min_snr_db,
    max_abs_error) is refused here: (artifacts, refused variants with the reason)."""
    artifacts, refused = {}, {}
    for case in plan.conversions():
        model, variant = case.model, case.variant
        progress("controller", f"artifact {model.name} {variant}")
        artifacts[case.key] = convert(
            model.path,
            variant,
            calibration=model.calibration,
            declared=model.declared,
            dataset=model.dataset,
            task=model.task,
        )
        if model.dataset is not None:
            try:
                budgets = {**plan.suite.budgets, **model.budgets}
                check_fidelity_budgets(artifacts[case.key].card, budgets)
            except FidelityBudgetError as exc:
                refused[case.key] = str(exc)
                progress("controller", f"refused {model.name} {variant}: {exc}")
    return artifacts, refused


class DeviceRun:
    """Everything that happens on one device during a run."""

    def __init__(
        self,
        suite: str,
        plan: DevicePlan,
        artifacts: Mapping[Key, Artifact],
        refused: Mapping[Key, str],
        agent: AgentApp,
        store: Store,
        outcome: RunOutcome,
    ) -> None:
        self.plan = plan
        self.device = plan.device
        self.artifacts = artifacts
        self.refused = refused
        self.agent = agent
        self.store = store
        self.outcome = outcome
        self.ctx = records.DeviceContext(suite, outcome.run_id, plan.device)
        self.finished: set[str] = set()  # ids of the cases with a record
        self.started = False  # a case began: from here on nothing is retried
        self.agent_path = f"{self.device.workdir}/{agent.name}"

    def run(self, patience: Patience, progress: Progress) -> None:
        try:
            self.persist(patience, progress)
        except FleetError as exc:
            # A failed device is data: each case it did not finish is stored, with why.
            kind = exc.kind if isinstance(exc, DeviceError) else "error"
            if self.outcome.stopped is not None:
                kind = "interrupted"
            for case in self.plan.cases:
                if case.key not in self.refused and case.id not in self.finished:
                    artifact = self.artifacts[case.key]
                    self.keep(records.failed_record(self.ctx, case, artifact, kind, str(exc)))
            raise
        finally:  # a refusal is decided before device time: kept even if the device failed
            for case in self.plan.cases:
                reason = self.refused.get(case.key)
                if reason is not None:
                    artifact = self.artifacts[case.key]
                    self.keep(records.refused_record(self.ctx, case, artifact, reason))

    def persist(self, patience: Patience, progress: Progress) -> None:
        """Attempts until one gets through: a transient failure before any case started is
        retried with backoff, a busy device waited for; each retry is said and stored."""
        name, tries, waited = self.device.name, 0, 0.0
        while True:
            try:
                return self.attempt(progress)
            except DeviceError as exc:
                kind = exc.kind
                if self.started or self.outcome.stopped is not None:
                    raise  # a measurement is never silently run again
                if exc.kind == "busy" and waited < patience.wait_s:
                    pause = min(BUSY_POLL_S, patience.wait_s - waited)
                    waited += pause
                    note = f"{exc}; waited {waited:g} of {patience.wait_s:g} s (--wait)"
                elif exc.kind in RETRIED and tries < patience.retries:
                    tries += 1
                    pause = 2.0 ** (tries - 1)
                    note = f"{exc}; retry {tries} of {patience.retries} in {pause:g} s"
                else:
                    raise
            progress(name, note)
            self.keep(records.retry_record(self.ctx, kind, note))
            time.sleep(pause)

    def attempt(self, progress: Progress) -> None:
        name = self.device.name
        progress(name, "connecting")
        transport = connect(self.device)
        try:
            work = build_job(self.outcome.run_id, self.plan, self.artifacts, self.refused)
            progress(name, f"running {len(work.cases)} case(s)")
            if not work.cases:
                return
            # One command when the device has every file: the agent says in its hello what
            # it lacks (or cannot start, lacking itself). Only then are files sent, over the
            # same connection, and the agent started again.
            missing = self.converse(transport, work, progress)
            if missing:
                self.push(transport, work, missing, progress)
                missing = self.converse(transport, work, progress)
                if missing:
                    raise DeviceError(name, f"still missing after sending: {', '.join(missing)}")
        finally:
            transport.close()

    def push(
        self, transport: Transport, work: DeviceJob, missing: list[str], progress: Progress
    ) -> None:
        """Send what the device lacks: the files its agent named, or, when the agent itself
        was missing (a new device or agent version), every file of the job not there.
        Content-addressed: a file already on the device under its name is never resent."""
        name = self.device.name
        files = dict([(self.agent_path, self.agent.path), *((r, p) for p, r in work.uploads)])
        unknown = sorted(set(missing) - set(files))
        if unknown:
            raise DeviceError(name, f"the agent asked for files this run has not: {unknown}")
        wanted = set(missing)
        if self.agent_path in wanted:
            wanted |= {r for r in files if r not in wanted and not transport.exists(r)}
        folders = {posixpath.dirname(remote) for remote in wanted} - {""}
        for folder in sorted(folders):
            if not any(other.startswith(folder + "/") for other in folders):
                transport.makedirs(folder)  # with its parents
        for remote, local in files.items():
            if remote in wanted:
                progress(name, f"push {local.name}")
                transport.put(local, remote)

    def converse(self, transport: Transport, work: DeviceJob, progress: Progress) -> list[str]:
        """Run the agent on the job, acting on each event as it comes. Returns the files the
        device lacks (the agent then stops after its hello), or [] once the agent is done."""
        stdin = json.dumps(work.job).encode() + b"\n"
        proc = transport.run([self.device.python, self.agent_path, "serve"], stdin=stdin)
        self.outcome.running.append(proc)
        if self.outcome.stopped is not None:  # stopped while this device connected or pushed
            proc.kill()
        missing: list[str] = []
        heard = False
        try:
            done = False
            for line in proc.lines(idle_timeout=SILENCE_S):
                try:
                    event = protocol.parse_event(line)
                except protocol.ProtocolError as exc:
                    raise DeviceError(self.device.name, f"agent sent {exc}") from None
                heard = True
                if event["event"] == "hello":
                    missing = list(event["missing"])
                done = self.handle(event, work, progress) or done
            code = proc.wait()
        except DeviceError as exc:
            if exc.kind != "timeout":
                raise
            raise DeviceError(
                self.device.name,
                f"no word from the agent for {SILENCE_S:g} s (it sends a heartbeat every"
                f" {protocol.HEARTBEAT_S:g} s): the device or its connection hung; stopped it",
                "timeout",
            ) from None
        finally:
            self.outcome.running.remove(proc)
        if done:
            return []
        if missing:
            return missing
        if (
            not heard
            and self.outcome.stopped is None
            and transport.alive()
            and not transport.exists(self.agent_path)
        ):
            return [self.agent_path]  # its Python could not open it: not on the device yet
        raise self.ended(code, proc, transport)

    def ended(self, code: int, proc: Process, transport: Transport) -> DeviceError:
        """Why the agent stopped before `done`, blaming what did it."""
        name, stderr = self.device.name, proc.stderr_text()
        if not transport.alive():
            message = "the connection to the device closed before the agent finished"
            return DeviceError(name, message, "connection_lost")
        if "No module named" in stderr:
            message = f"{stderr} — check that {self.device.python} has numpy and a runtime"
            return DeviceError(name, f"the agent could not start: {message}", "agent_lost")
        if code < 0 or code > 128:  # a local process: -N; a shell: 128 + N; over SSH: -1
            number = -code if code < -1 else code - 128 if code > 128 else 0
            known = number in {s.value for s in signal.Signals}
            how = signal.Signals(number).name if known else "a signal"
            return DeviceError(name, f"the agent was killed by {how}", "agent_lost")
        message = f"the agent ended without finishing (exit {code}): {stderr or 'no output'}"
        return DeviceError(name, message, "agent_lost")

    def handle(self, event: protocol.Event, work: DeviceJob, progress: Progress) -> bool:
        """Act on one agent event; True once the agent says it is done."""
        name = self.device.name
        if event["event"] == "hello":
            self.ctx.agent_version = event["agent_version"]
            if event["protocol"] != protocol.PROTOCOL:
                raise DeviceError(
                    name,
                    f"agent speaks protocol {event['protocol']}, controller"
                    f" {protocol.PROTOCOL}; upgrade fleet on both sides",
                )
        elif event["event"] == "fatal":
            raise DeviceError(name, f"agent: {event['message']}", event["reason"])
        elif event["event"] == "sysinfo":
            self.ctx.facts = event["facts"]
            self.keep(records.device_record(self.ctx))
        elif event["event"] == "case_start":
            self.started = True
            progress(name, f"{event['case']} started")
        elif event["event"] == "progress":
            progress(
                name, f"{event['case']} repetition {event['repetition']}/{event['repetitions']}"
            )
        elif event["event"] == "case_error":
            case = self._case(work, event["case"])
            self.keep(records.error_record(self.ctx, case, self.artifacts[case.key], event))
            self.finished.add(case.id)
            progress(name, f"{case.id} {event['kind']}: {event['message']}")
        elif event["event"] == "result":
            case = self._case(work, event["case"])
            result = records.result_record(self.ctx, case, self.artifacts[case.key], event)
            self.keep(result)
            self.finished.add(case.id)
            for record in records.generation_records(result, event["generation"]):
                self.keep(record)
            broken = result.fields.get("budget_failures")
            verdict = f"FAIL {broken}" if broken else "PASS"
            p50 = event["fields"].get("latency_ms_p50", float("nan"))
            progress(name, f"{case.id} p50 {p50:.3f} ms {verdict}")
        elif event["event"] == "done":
            return True
        return False  # a heartbeat: the agent is alive, which reading it already showed

    def _case(self, work: DeviceJob, case_id: str) -> Case:
        case = work.cases.get(case_id)
        if case is None:
            raise DeviceError(
                self.device.name, f"agent sent a result for an unknown case {case_id!r}"
            )
        return case

    def keep(self, record: Record) -> None:
        """Store first, then everything else: a crash after this loses nothing."""
        self.store.add(record)
        self.outcome.records.append(record)
