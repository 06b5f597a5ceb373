"""Ctrl-C during a run: exit 130 without waiting for the devices to finish, no worker left
behind, and a store that says what happened."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet.results.store import Store

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

# The case alone would take ten minutes; the bounds below are far from that and far above
# what stopping takes on a busy machine, so they tell "stopped" from "waited" and nothing else.
CASE_S = 600
STOP_S = 120


def workers(tmp_path: Path) -> list[int]:
    """The agent's worker processes of this test's run (their command line names tmp_path)."""
    found = subprocess.run(["pgrep", "-f", f"{tmp_path}.*worker"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_interrupt_stops_the_run_and_exits_130(tmp_path: Path) -> None:
    suite = tmp_path / "long.yaml"
    suite.write_text(f"""
name: long
measure: {{min_seconds: {CASE_S}, max_seconds: {CASE_S}, repetitions: 1, timeout_s: {2 * CASE_S}}}
models:
  - {{name: mlp, path: {ROOT / "zoo" / "digits_mlp.onnx"}}}
""")
    home = tmp_path / "home"
    env = {**os.environ, "FLEET_HOME": str(home), "FLEET_CACHE": str(tmp_path / "c")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleet", "run", str(suite)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        seen = ""
        while "started" not in seen:  # the agent runs the case: however long that takes
            line = proc.stderr.readline()
            assert line, f"the run ended before its case started:\n{seen}"
            seen += line
        # The worker is up (importing, loading or timing: Ctrl-C must stop it in any of them).
        assert wait_for(lambda: workers(tmp_path), STOP_S), seen
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=STOP_S)
        assert proc.returncode == 130, err
        assert "interrupted" in err
        assert wait_for(lambda: not workers(tmp_path), STOP_S)  # the worker went with it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in workers(tmp_path):  # only after a failure above
            os.kill(pid, signal.SIGKILL)

    # The store is consistent: the run is closed as interrupted, with its summary and the
    # device's facts, and the case it never finished says why.
    store = Store(home / "results.sqlite")
    (run,) = store.runs()
    assert run.finished_ns is not None and run.exit_code == 130
    kinds = sorted(r.measurement for r in store.records(run.run_id))
    assert kinds == ["device", "result", "run"]
    (case,) = store.records(run.run_id, "result")
    assert (case.fields["status"], case.fields["error_kind"]) == ("error", "interrupted")
