"""Ctrl-C during a run: exit 130 promptly, without waiting for the devices to finish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_interrupt_stops_the_run_and_exits_130(tmp_path: Path) -> None:
    suite = tmp_path / "long.yaml"
    suite.write_text(f"""
name: long
measure: {{min_seconds: 120, max_seconds: 120, repetitions: 1, timeout_s: 300}}
models:
  - {{name: mlp, path: {ROOT / "zoo" / "digits_mlp.onnx"}}}
""")
    env = {**os.environ, "FLEET_HOME": str(tmp_path / "home"), "FLEET_CACHE": str(tmp_path / "c")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleet", "run", str(suite)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    seen = ""
    while "started" not in seen and time.monotonic() < deadline:  # the case is timing now
        seen += proc.stderr.readline() if proc.stderr else ""
    time.sleep(2)  # the worker is in its timed loop by now
    proc.send_signal(signal.SIGINT)
    start = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - start < 15
    assert "interrupted" in err
    time.sleep(0.5)
    leftover = subprocess.run(["pgrep", "-f", f"{tmp_path}.*worker"], capture_output=True)
    assert leftover.stdout == b""  # the agent's worker went with it
