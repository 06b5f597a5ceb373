"""One device's part of a run: connect, send what it lacks, converse with its agent, keep
each record as it comes.

A transient failure before any case started is tried again, a busy device waited for; a
device that fails stores a record for each case it did not finish. `fleet/runner.py` runs one
of these per device; what to send and what to store are pure functions (`fleet/job.py`,
`fleet/records.py`).
"""

from __future__ import annotations

import json
import posixpath
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from fleet import records
from fleet.agent_build import AgentApp
from fleet.artifacts import Artifact
from fleet.connections import Connections
from fleet.errors import DeviceError, FleetError
from fleet.job import DeviceJob, build_job
from fleet.outcome import RunOutcome
from fleet.patience import BUSY_POLL_S, RETRIED, Patience
from fleet.plan import Case, DevicePlan, Key
from fleet.progress import megabytes, sending
from fleet.results.record import Record
from fleet.results.store import Store
from fleet.results.tables import result_line
from fleet.transport import Process, Transport
from fleet_agent import protocol

# An agent silent this long is hung (it sends a heartbeat every protocol.HEARTBEAT_S), and
# so is the device or the connection under it.
SILENCE_S = 6 * protocol.HEARTBEAT_S

Progress = Callable[[str, str], None]  # (device, message)


@dataclass(frozen=True)
class Prepared:
    """A run's variants, made before any device time: each converted artifact, and the
    variants that will not run, with why: refused (the conversion missed a fidelity budget)
    or failed (the converter gave up on it)."""

    artifacts: Mapping[Key, Artifact] = field(default_factory=dict)
    refused: Mapping[Key, str] = field(default_factory=dict)
    failed: Mapping[Key, str] = field(default_factory=dict)

    @property
    def left_out(self) -> Mapping[Key, str]:
        """The variants no device is sent."""
        return {**self.refused, **self.failed}


class DeviceRun:
    """Everything that happens on one device during a run."""

    def __init__(
        self,
        suite: str,
        plan: DevicePlan,
        prepared: Prepared,
        agent: AgentApp,
        store: Store,
        outcome: RunOutcome,
        connections: Connections,
    ) -> None:
        self.plan = plan
        self.device = plan.device
        self.prepared = prepared
        self.artifacts = prepared.artifacts
        self.connections = connections
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
            progress(self.device.name, "done")
        except FleetError as exc:
            # A failed device is data: each case it did not finish is stored, with why.
            kind = exc.kind if isinstance(exc, DeviceError) else "error"
            if self.outcome.stopped is not None:
                kind = "interrupted"
            # Said as it happens; the reason once, after the results (fleet/cli/finish.py).
            progress(self.device.name, f"ERROR {kind}")
            for case in self.plan.cases:
                if case.key not in self.prepared.left_out and case.id not in self.finished:
                    artifact = self.artifacts[case.key]
                    self.keep(records.failed_record(self.ctx, case, artifact, kind, str(exc)))
            raise
        finally:
            self.connections.release(self.device)
            self.keep_decided()

    def keep_decided(self) -> None:
        """The cases decided before device time, refused for their fidelity or failed to
        convert: stored even if the device failed."""
        for case in self.plan.cases:
            reason = self.prepared.refused.get(case.key)
            if reason is not None:
                artifact = self.artifacts[case.key]
                self.keep(records.refused_record(self.ctx, case, artifact, reason))
            reason = self.prepared.failed.get(case.key)
            if reason is not None:
                self.keep(records.failed_record(self.ctx, case, None, "conversion", reason))

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
        transport = self.connections.open(self.device)
        try:
            work = build_job(self.outcome.run_id, self.plan, self.artifacts, self.prepared.left_out)
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
        except BaseException as exc:
            # The next attempt, or run, connects afresh; a busy device is asked again on
            # the connection that found it busy.
            if not (isinstance(exc, DeviceError) and exc.kind == "busy"):
                self.connections.drop(self.device)
            raise

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
                progress(name, f"push {local.name} ({megabytes(local.stat().st_size)})")
                transport.put(local, remote, sent=sending(progress, name, local))

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
            progress(name, f"{case.id} {result_line(result)}")  # the table's words
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
