"""A lab that misbehaves mid-case: the controller stopped (SIGINT, SIGTERM), the agent or its
worker killed, the agent hung, two runs at once. Each asserts the exit code, the stored
records (every unfinished case stored with why) and that nothing is left on the device."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from fleet import lab as lab_lib
from fleet.results.store import Store

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "zoo" / "digits_mlp.onnx"

pytestmark = pytest.mark.slow


def slow_suite(folder: Path, seconds: float = 30.0) -> Path:
    """One case whose repetition times for `seconds`: long enough to act in the middle."""
    suite = {
        "name": "faults",
        "measure": {"min_seconds": seconds, "max_seconds": seconds * 2, "repetitions": 1},
        "models": [{"name": "mlp", "path": str(MLP), "variants": ["onnx:fp32"]}],
    }
    path = folder / "faults.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def start_run(lab: Path, store: Path, *extra: str, seconds: float = 30.0) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "fleet", "run", str(slow_suite(store.parent, seconds))]
    argv += ["--inventory", str(lab / "inventory.yaml"), "--devices", "lab1"]
    argv += ["--store", str(store), *extra]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def device_pids(workdir: str, role: str) -> list[int]:
    """The agent's processes of one lab device: its serve, or its workers."""
    found = subprocess.run(
        ["pgrep", "-f", f"{workdir}/agent-.* {role}"], capture_output=True, text=True
    )
    return [int(p) for p in found.stdout.split()]


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.2)


def lab1(lab: Path) -> lab_lib.LabDevice:
    return next(d for d in lab_lib.load(lab) if d.name == "lab1")


def mid_case(
    lab: Path, tmp_path: Path, seconds: float = 30.0
) -> tuple[subprocess.Popen[str], Path, str]:
    """A run started on lab1, returned once its worker is timing the case."""
    store = tmp_path / "results.sqlite"
    proc = start_run(lab, store, seconds=seconds)
    workdir = lab1(lab).workdir
    wait_for(lambda: device_pids(workdir, "worker"), 120, "the worker to start")
    return proc, store, workdir


def assert_device_clean(workdir: str, outputs_removed: bool = True) -> None:
    """No agent or worker left, the lock free, no outputs left behind (a killed agent
    cannot remove them: the next run's agent does, test_agent_serve.py)."""
    wait_for(lambda: not device_pids(workdir, "(serve|worker)"), 15, "the agent to stop")
    with open(Path(workdir) / "agent.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while a run holds it
    outputs = Path(workdir) / "outputs"
    if outputs_removed:
        assert not outputs.exists() or not list(outputs.iterdir())


@pytest.mark.parametrize(("number", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stopping_the_controller_stores_the_truth_and_stops_the_device(
    lab: Path, tmp_path: Path, number: int, code: int
) -> None:
    proc, store_path, workdir = mid_case(lab, tmp_path)
    proc.send_signal(number)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == code, output
    store = Store(store_path)
    (run,) = store.runs()
    assert run.exit_code == code  # not 0, not "running"
    (result,) = store.records(measurement="result")
    assert (result.status, result.fields["error_kind"]) == ("error", "interrupted")
    assert_device_clean(workdir)


def test_a_killed_agent_is_named_and_leaves_nothing_behind(lab: Path, tmp_path: Path) -> None:
    proc, store_path, workdir = mid_case(lab, tmp_path)
    for pid in device_pids(workdir, "serve"):
        os.kill(pid, signal.SIGKILL)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, output
    assert "the agent was killed by" in output and "numpy" not in output
    (result,) = Store(store_path).records(measurement="result")
    assert (result.status, result.fields["error_kind"]) == ("error", "agent_lost")
    assert_device_clean(workdir, outputs_removed=False)  # the worker saw its agent go


def test_a_killed_worker_fails_its_case_only(lab: Path, tmp_path: Path) -> None:
    proc, store_path, workdir = mid_case(lab, tmp_path)
    for pid in device_pids(workdir, "worker"):
        os.kill(pid, signal.SIGKILL)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, output
    (result,) = Store(store_path).records(measurement="result")
    assert result.status == "error"
    message = str(result.fields["message"])
    assert "worker killed (SIGKILL) in" in message and "other than the OOM killer" in message
    assert_device_clean(workdir)


def test_a_hung_agent_is_declared_hung_after_its_heartbeats_stop(lab: Path, tmp_path: Path) -> None:
    proc, store_path, workdir = mid_case(lab, tmp_path)
    (agent,) = device_pids(workdir, "serve")
    os.kill(agent, signal.SIGSTOP)  # as a device that hangs: no output, no exit
    try:
        output, _ = proc.communicate(timeout=120)
    finally:
        os.kill(agent, signal.SIGCONT)
    assert proc.returncode == 2, output
    assert "no word from the agent for 30 s" in output
    (result,) = Store(store_path).records(measurement="result")
    assert (result.status, result.fields["error_kind"]) == ("error", "timeout")
    assert_device_clean(workdir)  # once it runs again, the agent finds its controller gone


def until_busy(proc: subprocess.Popen[str]) -> list[str]:
    """The output of a run up to the line that says its device is busy."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "device busy: held by run " in line:
            return lines
    raise AssertionError("".join(lines))


def test_a_second_run_on_a_busy_device_is_told_who_holds_it(lab: Path, tmp_path: Path) -> None:
    first, _, workdir = mid_case(lab, tmp_path)
    second = tmp_path / "second"
    second.mkdir()
    proc = start_run(lab, second / "results.sqlite", "--wait", "0")
    output, _ = proc.communicate(timeout=120)
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=60)
    assert proc.returncode == 2, output
    assert "device busy: held by run " in output
    (result,) = Store(second / "results.sqlite").records(measurement="result")
    assert (result.status, result.fields["error_kind"]) == ("error", "busy")
    assert_device_clean(workdir)


def test_a_busy_device_is_waited_for_and_the_wait_is_said_and_stored(
    lab: Path, tmp_path: Path
) -> None:
    first, _, workdir = mid_case(lab, tmp_path)
    second = tmp_path / "second"
    second.mkdir()
    proc = start_run(lab, second / "results.sqlite", "--wait", "300", seconds=1.0)
    said = until_busy(proc)  # the second run waits for the first ...
    first.send_signal(signal.SIGINT)  # ... which then ends, and the second goes on
    first.communicate(timeout=60)
    rest, _ = proc.communicate(timeout=240)
    output = "".join(said) + rest
    assert proc.returncode == 0, output
    assert "--wait" in output
    store = Store(second / "results.sqlite")
    waits = store.records(measurement="retry")
    assert waits and all(w.fields["error_kind"] == "busy" for w in waits)
    (result,) = store.records(measurement="result")
    assert result.status == "ok"
    assert_device_clean(workdir)
