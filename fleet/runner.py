"""Drive one run: convert, push, run the agent on every device, store each result at once.

Devices run in parallel (bounded); on one device the cases run one at a time, in the agent.
A device that fails is reported in the outcome while the others finish: partial failure is
data, not an exception.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fleet_agent
from fleet.agent_build import AgentApp, build_agent
from fleet.artifacts import Artifact, FidelityBudgetError, check_fidelity_budget, convert
from fleet.artifacts.cache import sha256_file
from fleet.config import InfluxConfig
from fleet.errors import DeviceError, FleetError
from fleet.inventory import Device
from fleet.plan import Case, DevicePlan, Plan, make_plan
from fleet.results.influx import PushReport, push_pending
from fleet.results.record import ERRORS, FINDINGS, Record, make_record
from fleet.results.store import Store
from fleet.suite import Suite, check_budgets
from fleet.transport import Process, Transport, connect

# Extra silence allowed beyond a case's own timeout before the agent is declared hung.
AGENT_GRACE_S = 120.0

Reporter = Callable[[str, str], None]  # (device, message)


@dataclass
class RunOutcome:
    run_id: str
    records: list[Record] = field(default_factory=list)
    device_errors: dict[str, str] = field(default_factory=dict)
    push: PushReport | None = None
    running: list[Process] = field(default_factory=list, repr=False)  # agents at work now

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
    suite: Suite,
    devices: Sequence[Device],
    store: Store,
    *,
    parallel: int = 4,
    report: Reporter = lambda device, message: None,
    influx: InfluxConfig | None = None,
) -> RunOutcome:
    """Run the suite; every record is in the store before this returns or raises. With an
    InfluxDB configured, what the store holds unsent then goes there (spooled if it is down)."""
    started = time.monotonic()
    plan = make_plan(suite, devices)
    outcome = RunOutcome(new_run_id())
    artifacts, refused = prepare_artifacts(plan, report)
    agent = build_agent()
    store.start_run(outcome.run_id, suite.name, [d.name for d in devices])
    try:
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            futures = {
                pool.submit(
                    DeviceRun(suite.name, dp, artifacts, refused, agent, store, outcome, report).run
                ): dp.device.name
                for dp in plan.devices
            }
            try:
                for future, name in futures.items():
                    try:
                        future.result()
                    except FleetError as exc:
                        outcome.device_errors[name] = str(exc)
                        report(name, f"ERROR {exc}")
            except KeyboardInterrupt:
                # Stop the agents rather than wait for them; what they sent is stored.
                for process in list(outcome.running):
                    process.kill()
                raise
    finally:
        store.add(run_record(suite.name, devices, outcome, time.monotonic() - started))
        store.finish_run(outcome.run_id, outcome.exit_code)
    if influx is not None:
        outcome.push = push_pending(store, influx)
    return outcome


def run_record(
    suite: str, devices: Sequence[Device], outcome: RunOutcome, duration_s: float
) -> Record:
    """The run's summary, for the run list and the dashboards' annotations."""
    return make_record(
        "run",
        {"suite": suite},
        {
            "run_id": outcome.run_id,
            "exit_code": outcome.exit_code,
            "results": len(outcome.results),
            "failed": len(outcome.failed),
            "devices": ",".join(d.name for d in devices),
            "duration_s": duration_s,
        },
    )


Key = tuple[str, str]  # (model name, variant as written in the suite)


def prepare_artifacts(plan: Plan, report: Reporter) -> tuple[dict[Key, Artifact], dict[Key, str]]:
    """Convert every (model, variant) once, before any device time is spent. A variant whose
    conversion already loses more accuracy than the suite's accuracy_drop_pp budget is
    refused here: (artifacts, refused variants with the reason)."""
    artifacts, refused = {}, {}
    for model, variant in plan.variants():
        report("controller", f"artifact {model.name} {variant}")
        key = (model.name, str(variant))
        artifacts[key] = convert(
            model.path,
            variant,
            calibration=model.calibration,
            declared=model.declared,
            dataset=model.dataset,
        )
        limit = {**plan.suite.budgets, **model.budgets}.get("accuracy_drop_pp")
        if limit is not None and model.dataset is not None:
            try:
                check_fidelity_budget(artifacts[key].card, limit)
            except FidelityBudgetError as exc:
                refused[key] = str(exc)
                report("controller", f"refused {model.name} {variant}: {exc}")
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
        report: Reporter,
    ) -> None:
        self.suite = suite
        self.plan = plan
        self.device = plan.device
        self.artifacts = artifacts
        self.refused = refused
        self.agent = agent
        self.store = store
        self.outcome = outcome
        self.report = report
        self.sysinfo: dict[str, Any] = {}
        self.agent_version = ""
        self.agent_path = f"{self.device.workdir}/{agent.name}"
        self.outputs = f"{self.device.workdir}/outputs/{outcome.run_id}"
        self.reference_accuracy: dict[str, float] = {}

    def run(self) -> None:
        try:
            self.report(self.device.name, "connecting")
            transport = connect(self.device)
            try:
                job, cases = self.push(transport)
                self.report(self.device.name, f"running {len(cases)} case(s)")
                if cases:
                    self.converse(transport, job, cases)
                # The FP32 outputs only served this run's comparisons.
                transport.check(["rm", "-rf", self.outputs])
            finally:
                transport.close()
        finally:  # a refusal is decided before device time: kept even if the device failed
            for case in self.plan.cases:
                reason = self.refused.get((case.model.name, str(case.variant)))
                if reason is not None:
                    self.keep(self.refused_record(case, reason))

    def push(self, transport: Transport) -> tuple[dict[str, Any], dict[str, Case]]:
        """Send the agent, artifacts and data sets the device lacks; build the job."""
        workdir = self.device.workdir
        transport.check(["mkdir", "-p", f"{workdir}/cache", f"{workdir}/outputs"])
        self.send(transport, self.agent.path, self.agent_path)
        job_cases, cases = [], {}
        outputs = self.outputs
        transport.check(["mkdir", "-p", outputs])
        for case in self.plan.cases:
            if (case.model.name, str(case.variant)) in self.refused:
                continue
            artifact = self.artifacts[(case.model.name, str(case.variant))]
            remote = f"{workdir}/cache/{artifact.sha256}{artifact.path.suffix}"
            self.send(transport, artifact.path, remote)
            dataset = None
            if case.model.dataset is not None:
                dataset = f"{workdir}/cache/{sha256_file(case.model.dataset)}.npz"
                self.send(transport, case.model.dataset, dataset)
            reference = f"{outputs}/{case.model.name}.npy" if case.has_reference else None
            settings = dict(case.settings)
            # A decoder (declared in the suite) also gets time-to-first-token and tokens/s.
            task = "generate" if case.model.declared.get("architecture") == "decoder" else None
            job_cases.append(
                {
                    "id": case.id,
                    "model": case.model.name,
                    "artifact": remote,
                    "sha256": artifact.sha256,
                    "format": case.variant.format,
                    "precision": case.variant.precision,
                    "runtime": case.runtime,
                    "provider": settings["provider"],
                    "threads": settings["threads"],
                    "batch": settings["batch"],
                    "dataset": dataset,
                    "save_outputs": reference if case.is_reference else None,
                    "reference": reference if not case.is_reference else None,
                    "settings": settings,
                    "timeout_s": settings["timeout_s"],
                    "task": task,
                    # Inputs are made before the model loads, so the memory baseline has them.
                    "inputs": artifact.card.get("inputs"),
                }
            )
            cases[case.id] = case
        job = {
            "protocol": fleet_agent.PROTOCOL,
            "run_id": self.outcome.run_id,
            "workdir": workdir,
            "cases": job_cases,
        }
        return job, cases

    def send(self, transport: Transport, local: Path, remote: str) -> None:
        """Content-addressed: a file already on the device under its hash is never resent."""
        if not transport.exists(remote):
            self.report(self.device.name, f"push {local.name}")
            transport.put(local, remote)

    def converse(self, transport: Transport, job: dict[str, Any], cases: dict[str, Case]) -> None:
        proc = transport.run(
            [self.device.python, self.agent_path, "serve"], stdin=json.dumps(job).encode() + b"\n"
        )
        self.outcome.running.append(proc)
        try:
            self.read_events(proc, job, cases)
        finally:
            self.outcome.running.remove(proc)

    def read_events(self, proc: Process, job: dict[str, Any], cases: dict[str, Case]) -> None:
        idle = max(float(c["timeout_s"]) for c in job["cases"]) + AGENT_GRACE_S
        done = False
        for line in proc.lines(idle_timeout=idle):
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                raise DeviceError(
                    self.device.name, f"agent printed a line that is not JSON: {line[:120]!r}"
                ) from None
            done = self.handle(event, cases) or done
        code = proc.wait()
        if not done:
            raise DeviceError(
                self.device.name,
                f"agent ended without finishing (exit {code}): {proc.stderr_text()}"
                f" — check that {self.device.python} has numpy and a runtime",
            )

    def handle(self, event: dict[str, Any], cases: dict[str, Case]) -> bool:
        """Act on one agent event; True once the agent says it is done."""
        kind = event.get("event")
        if kind == "hello":
            self.agent_version = str(event.get("agent_version"))
            if event.get("protocol") != fleet_agent.PROTOCOL:
                raise DeviceError(
                    self.device.name,
                    f"agent speaks protocol {event.get('protocol')}, controller"
                    f" {fleet_agent.PROTOCOL}; upgrade fleet on both sides",
                )
        elif kind == "fatal":
            raise DeviceError(self.device.name, f"agent: {event.get('message')}")
        elif kind == "sysinfo":
            self.sysinfo = {k: v for k, v in event.items() if k != "event"}
            self.keep(make_record("device", self.tags(), self.device_fields()))
        elif kind == "case_start":
            self.report(self.device.name, f"{event['case']} started")
        elif kind == "progress":
            self.report(
                self.device.name,
                f"{event['case']} repetition {event['repetition']}/{event['repetitions']}",
            )
        elif kind in ("result", "case_error"):
            record = self.case_record(event, cases[event["case"]])
            self.keep(record)
            for entry in event.get("generation") or []:
                self.keep(self.generation_record(entry, record))
        elif kind == "done":
            return True
        return False

    def keep(self, record: Record) -> None:
        """Store first, then everything else: a crash after this loses nothing."""
        self.store.add(record)
        self.outcome.records.append(record)

    def tags(
        self, case: Case | None = None, extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        tags = {
            "suite": self.suite,
            "device": self.device.name,
            "device_class": self.device.device_class,
            "arch": str(self.sysinfo.get("arch", "unknown")),
            "os": str(self.sysinfo.get("os", "unknown")),
        }
        if case is not None:
            tags.update(
                model=case.model.name,
                format=case.variant.format,
                precision=case.variant.precision,
                runtime=case.runtime,
                provider=str(case.settings["provider"]),
                batch=str(case.settings["batch"]),
                threads=str(case.settings["threads"]),
            )
        tags.update(extra or {})
        return tags

    def device_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {"run_id": self.outcome.run_id, "status": "ok"}
        for key, value in self.sysinfo.items():
            # "unavailable" is left out: a field must keep one type across devices and runs;
            # arch and os are tags already.
            if key in ("arch", "os"):
                continue
            if isinstance(value, bool | int | float | str) and value != "unavailable":
                fields[key] = value
        return fields

    def artifact_fields(self, case: Case) -> dict[str, object]:
        artifact = self.artifacts[(case.model.name, str(case.variant))]
        return {
            "run_id": self.outcome.run_id,
            "model_sha256": artifact.sha256,
            "agent_version": self.agent_version,
            "model_size_mb": artifact.card.get("model_size_mb"),
            "params": artifact.card.get("params"),
        }

    def refused_record(self, case: Case, reason: str) -> Record:
        fields = self.artifact_fields(case)
        fields.update(status="refused", message=reason, passed=False)
        return make_record("result", self.tags(case), fields)

    def case_record(self, event: dict[str, Any], case: Case) -> Record:
        fields = self.artifact_fields(case)
        if event["event"] == "case_error":
            fields.update(status=event["kind"], message=event.get("message", ""), passed=False)
            if event["kind"] == "skipped":
                fields.pop("passed")
            self.report(self.device.name, f"{case.id} {event['kind']}: {event.get('message')}")
            return make_record("result", self.tags(case), fields)
        measured = {k: v for k, v in event["fields"].items() if _finite(v)}
        fields.update(measured, status="ok")
        accuracy = measured.get("accuracy_top1")
        if case.is_reference and isinstance(accuracy, float):
            self.reference_accuracy[case.model.name] = accuracy
        elif isinstance(accuracy, float) and case.model.name in self.reference_accuracy:
            fields["accuracy_drop_pp"] = (self.reference_accuracy[case.model.name] - accuracy) * 100
        broken = check_budgets(fields, case.budgets)
        fields.update(passed=not broken, budget_failures="; ".join(broken))
        verdict = "PASS" if not broken else "FAIL " + "; ".join(broken)
        self.report(
            self.device.name, f"{case.id} p50 {measured['latency_ms_p50']:.3f} ms {verdict}"
        )
        return make_record("result", self.tags(case, event.get("tags")), fields)

    def generation_record(self, entry: Mapping[str, float], result: Record) -> Record:
        """A decoder's figures at one context length: the result's tags plus the length."""
        tags = {**result.tags, "context_tokens": str(int(entry["context_tokens"]))}
        kept = ("run_id", "model_sha256", "agent_version", "runtime_version", "valid", "status")
        fields = {k: result.fields[k] for k in kept if k in result.fields}
        # context_tokens is a tag: the same name as a field would clash in InfluxDB.
        fields.update(
            {k: float(v) for k, v in entry.items() if k != "context_tokens" and _finite(float(v))}
        )
        return make_record("generation", tags, fields)


def _finite(value: object) -> bool:
    return not isinstance(value, float) or (value == value and abs(value) != float("inf"))
