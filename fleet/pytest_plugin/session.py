"""The per-process side of the plugin: the store, the connections and what it learnt about
each device.

One process (an xdist worker, or pytest itself) keeps one store, one connection per device
(opened by the device's first test, kept for its others, closed at the end of the session)
and, per device, what it learnt: the facts, and a device found down, so that the device's
other tests fail at once rather than each waiting out the connection retries.
`FleetSession.run` runs a one-device plan with `fleet.runner.run_suite`, the very path of
`fleet run`; every record it stores carries the test's node id (field `test`) and the xdist
worker (field `test_worker`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from fleet.errors import ConfigError, DeviceError
from fleet.inventory import Device
from fleet.plan import Plan
from fleet.progress import SENDING
from fleet.pytest_plugin.options import Options, worker_id
from fleet.results.record import Record
from fleet.results.store import Store
from fleet.suite import Suite

if TYPE_CHECKING:
    from fleet.connections import Connections

log = logging.getLogger("fleet.pytest")

# Device errors that will not mend within a session: its other tests fail at once with them.
LASTING = ("unreachable", "login", "host_key")


class NodeStore(Store):
    """The results store, each record added with the node id of the test that made it."""

    test = ""
    worker = ""

    def add(self, record: Record) -> int:
        if self.test:
            extra = {"test": self.test, **({"test_worker": self.worker} if self.worker else {})}
            record = replace(record, fields={**record.fields, **extra})
        return super().add(record)


@dataclass
class DeviceState:
    """What this process learnt about one device."""

    facts: dict[str, object] | None = None
    error: DeviceError | None = None  # a lasting failure: the device's other tests fail at once
    failed_in: str = ""


class FleetSession:
    """One per process: the options, the store, the connections, each device's state."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.devices = {d.name: d for d in options.devices}
        self.states = {name: DeviceState() for name in self.devices}
        self._connections: Connections | None = None
        self._store: NodeStore | None = None
        self._folder: Path | None = None  # the suite files of the tests' own runs

    @property
    def store(self) -> NodeStore:
        if self._store is None:
            self._store = NodeStore(self.options.store_path)
        return self._store

    @property
    def connections(self) -> Connections:
        """One connection per device, kept from its first test to the end of the session:
        each test's run takes the device's lock anew, but logs in no more."""
        if self._connections is None:
            from fleet.connections import Connections  # paramiko: only once a test runs

            self._connections = Connections(keep=True)
        return self._connections

    def close(self) -> None:
        if self._connections is not None:
            self._connections.close()
        if self._store is not None:
            self._store.close()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def run(self, plan: Plan, test: str) -> list[Record]:
        """Run a one-device plan as `fleet run` would; the records of the run, or the
        device's error (DeviceError, naming it)."""
        from fleet.runner import run_suite

        __tracebackhide__ = True
        device = plan.devices[0].device
        state = self.states[device.name]
        if state.error is not None:
            raise DeviceError(
                device.name,
                f"{str(state.error).removeprefix(device.name + ': ')} (found in"
                f" {state.failed_in}; not tried again in this session)",
                state.error.kind,
            )
        store = self.store
        store.test, store.worker = test, worker_id()

        try:
            outcome = run_suite(
                plan,
                store,
                parallel=1,
                patience=self.options.patience,
                progress=log_progress,
                connections=self.connections,
            )
        finally:
            store.test = ""
        error = outcome.device_errors.get(device.name)
        if isinstance(error, DeviceError):
            if error.kind in LASTING:
                state.error, state.failed_in = error, test
            raise error
        if error is not None:
            raise error
        for record in outcome.records:
            if record.measurement == "device":
                facts: dict[str, object] = {
                    k: v for k, v in record.fields.items() if k not in ("run_id", "status")
                }
                state.facts = {**facts, "arch": record.tags["arch"], "os": record.tags["os"]}
        return outcome.records

    def suite(self, body: dict[str, object], where: str) -> Suite:
        """A test's own runs as a suite file, read by `load_suite` as `fleet run` reads one
        (every check and default the same); a problem is reported as the test's."""
        from fleet.suite import load_suite

        __tracebackhide__ = True
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="fleet-pytest-"))
        text = yaml.safe_dump(body, sort_keys=False)
        path = self._folder / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
        path.write_text(f"# fleet_device.run in {where.partition(' in ')[2]}\n{text}")
        try:
            return load_suite(path)
        except ConfigError as exc:
            message = re.sub(rf"^{re.escape(str(path))}(:\d+)?: ", "", str(exc))
            raise ConfigError(f"{where}: {message}") from None

    def facts(self, name: str) -> dict[str, object]:
        """The device's facts: its agent's sysinfo from the last run here, else what the
        pre-flight check of `fleet devices` reads (one connection, nothing pushed)."""
        __tracebackhide__ = True
        state = self.states[name]
        if state.facts is None:
            try:
                state.facts = self._check(self.devices[name])
            except DeviceError as exc:
                if exc.kind in LASTING:
                    state.error, state.failed_in = exc, "the check for its facts"
                raise
        return state.facts

    def _check(self, device: Device) -> dict[str, object]:
        from fleet.agent_build import build_agent
        from fleet.patience import RETRIED
        from fleet.preflight import check_device

        __tracebackhide__ = True
        tries = 0
        while True:
            checked = check_device(device, build_agent().name)
            error = checked.error
            if error is None or error.kind not in RETRIED or tries >= self.options.patience.retries:
                break
            time.sleep(2.0**tries)  # as the runner: 1, 2, 4 ... s
            tries += 1
        if error is not None:
            raise error
        problems = [p for p in checked.problems if not p.startswith("busy:")]  # runs wait
        if problems or checked.facts is None:
            raise DeviceError(device.name, "; ".join(problems) or "the check said nothing")
        return dict(checked.facts)


def log_progress(device: str, message: str) -> None:
    """A run's progress in pytest's log: each event at INFO, a push's running count (each
    percent of a large file) at DEBUG only."""
    level = logging.DEBUG if SENDING.fullmatch(message) else logging.INFO
    log.log(level, "[%s] %s", device, message)
