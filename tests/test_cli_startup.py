"""`fleet --help` and the commands' help load none of the heavy libraries.

numpy, onnx, onnxruntime, influxdb_client and paramiko take about a second together; the
commands import them where they use them. This checks which modules the real command
imports (`python -X importtime`), not how long it takes: bench/cli_startup.py times it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = {"numpy", "onnx", "onnxruntime", "influxdb_client", "paramiko"}


def imported(*args: str) -> set[str]:
    """The top-level names of every module `python -m fleet ARGS` imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "fleet", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    return {line.rpartition("|")[2].strip().split(".")[0] for line in lines}


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["run", "--help"],
        ["results", "push", "--help"],
        ["lab", "up", "--help"],
        ["model", "card", "--help"],
    ],
)
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    modules = imported(*args)
    assert "click" in modules  # the listing is read right
    assert not HEAVY & modules
