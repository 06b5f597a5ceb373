"""Shared fixtures: a real lab of sshd devices, and isolated result stores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import influxdb_server, results_store, victoria_metrics_server  # noqa: F401

from fleet import lab as lab_lib

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fleet_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Results and logs in a fresh folder; the artifact cache stays shared (it is keyed by
    content, and the converter environment in it is slow to build)."""
    home = tmp_path / "fleet-home"
    monkeypatch.setenv("FLEET_HOME", str(home))
    return home


@pytest.fixture(autouse=True, scope="session")
def _coverage_on_lab_devices() -> None:
    """Under coverage, let agent processes started by lab sshds record their coverage too."""
    if "COVERAGE_PROCESS_CONFIG" in os.environ:
        os.environ["COVERAGE_PROCESS_START"] = str(ROOT / "pyproject.toml")
        os.environ["COVERAGE_FILE"] = str(ROOT / ".coverage")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Path]:
    """Three devices, each a real OpenSSH sshd on its own 127.0.0.x address."""
    folder = tmp_path / "lab"
    lab_lib.up(folder, 3)
    try:
        yield folder
    finally:
        lab_lib.down(folder)
