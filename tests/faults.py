"""What the fault-matrix tests (tests/test_faults_lab.py) share: a suite whose cases last as
long as asked, `fleet run` started in the background, and the checks every row makes (each
planned case stored once, no agent or worker left on the device)."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml

from fleet import lab as lab_lib
from fleet.results.store import Store

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo"
# A case that would take ten minutes: a row that ends well before it stopped the device
# rather than waiting for it.
CASE_S = 600.0


def suite_file(folder: Path, seconds: float, models: int = 1, dataset: bool = False) -> Path:
    """`models` cases (m1, m2 ...: the digits MLP), each timed for `seconds`."""
    measure = {"min_seconds": seconds, "max_seconds": seconds * 2, "repetitions": 1}
    measure["timeout_s"] = seconds * 4 + 60
    model: dict[str, object] = {"path": str(ZOO / "digits_mlp.onnx"), "variants": ["onnx:fp32"]}
    if dataset:
        model["dataset"] = str(ZOO / "digits_test.npz")
    suite = {
        "name": "faults",
        "measure": measure,
        "models": [{"name": f"m{i}", **model} for i in range(1, models + 1)],
    }
    path = folder / "faults.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def start_run(
    suite: Path,
    store: Path,
    lab: Path | None,
    *extra: str,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[str]:
    """`fleet run` on lab1 (or, without a lab, on `local`), its stderr in its stdout."""
    argv = [sys.executable, "-m", "fleet", "run", str(suite), "--store", str(store)]
    if lab is not None:
        argv += ["--inventory", str(lab / "inventory.yaml"), "--devices", "lab1"]
    return subprocess.Popen(
        [*argv, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=None if env is None else dict(env),
    )


def wait_for(
    condition: Callable[[], object],
    timeout: float,
    what: str,
    proc: subprocess.Popen[str] | None = None,
) -> None:
    """Poll until `condition` holds; fail after `timeout` s, or as soon as `proc` ended."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}:\n{output}")
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.2)


def lab1(lab: Path) -> lab_lib.LabDevice:
    return next(d for d in lab_lib.load(lab) if d.name == "lab1")


def device_pids(workdir: str, role: str) -> list[int]:
    """The agent's processes of one device: its serve, or its workers (a regex of both)."""
    found = subprocess.run(
        ["pgrep", "-f", f"{workdir}/agent-.* {role}"], capture_output=True, text=True
    )
    return [int(p) for p in found.stdout.split()]


def sshd_pids(device: lab_lib.LabDevice) -> list[int]:
    """A lab device's sshd: the listener and every process of its sessions (not the agent)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [device.pid], [device.pid]
    while todo:
        for child in children.get(todo.pop(), []):
            try:
                name = Path(f"/proc/{child}/comm").read_text().strip()
            except OSError:
                continue
            if name.startswith("sshd"):
                found.append(child)
                todo.append(child)
    return found


def stored(store: Path, measurement: str) -> int:
    """Records of a measurement in a store that `fleet run` is writing (WAL: never blocks)."""
    if not store.exists():
        return 0
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        query = "SELECT COUNT(*) FROM records WHERE measurement = ?"
        return int(db.execute(query, (measurement,)).fetchone()[0])
    except sqlite3.OperationalError:  # no table yet
        return 0
    finally:
        db.close()


def case_records(store: Store) -> dict[str, tuple[str, str | None]]:
    """Each case's one result record, by model: (status, error_kind). A case stored twice,
    or a record of a case the suite never had, fails here."""
    found: dict[str, tuple[str, str | None]] = {}
    for record in store.records(measurement="result"):
        model = record.tags["model"]
        assert model not in found, f"{model} stored twice"
        kind = record.fields.get("error_kind")
        found[model] = (record.status, None if kind is None else str(kind))
    return found


def assert_device_clean(workdir: str, outputs_removed: bool = True) -> None:
    """No agent or worker left, the device lock free, no outputs left behind (a killed agent
    cannot remove them: the next run's agent does, test_agent_serve.py)."""
    wait_for(lambda: not device_pids(workdir, "(serve|worker)"), 30, "the agent to stop")
    lock = Path(workdir) / "agent.lock"
    if lock.exists():  # read-only: the folder may be mounted so
        fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while a run holds it
        finally:
            os.close(fd)
    outputs = Path(workdir) / "outputs"
    if outputs_removed:
        assert not outputs.exists() or not list(outputs.iterdir())
