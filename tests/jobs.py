"""Agent jobs for tests that run the agent (or its parts) directly, built as the controller
builds them: the protocol's types, every setting from the suite's defaults."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import typeguard

from fleet.agent_build import build_agent
from fleet.suite import MEASURE_DEFAULTS
from fleet_agent import protocol

# Short enough for a test, long enough for p99 over two repetitions.
QUICK: dict[str, Any] = {
    "warmup_iterations": 5,
    "min_iterations": 50,
    "max_seconds": 5.0,
    "repetitions": 2,
    "timeout_s": 60.0,
}


def settings(**overrides: Any) -> protocol.Settings:
    """The suite's defaults with QUICK and ``overrides`` on top; unknown names are a bug."""
    unknown = set(overrides) - set(MEASURE_DEFAULTS)
    assert not unknown, f"not a setting: {unknown}"
    return cast(protocol.Settings, {**MEASURE_DEFAULTS, **QUICK, **overrides})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_case(case_id: str, artifact: Path, **extra: Any) -> protocol.Case:
    """A case of ``artifact`` with QUICK settings; ``extra`` replaces any of its keys."""
    case: dict[str, Any] = {
        "id": case_id,
        "model": case_id,
        "artifact": str(artifact),
        "sha256": sha256(artifact) if artifact.exists() else "0" * 64,
        "format": artifact.suffix[1:],
        "precision": "fp32",
        "runtime": "litert" if artifact.suffix == ".tflite" else "onnxruntime",
        "task": None,
        "dataset": None,
        "save_outputs": None,
        "reference": None,
        "inputs": None,
        "settings": settings(),
    }
    case.update(extra)
    typeguard.check_type(case, protocol.Case)
    return cast(protocol.Case, case)


def make_job(workdir: Path, cases: list[protocol.Case]) -> protocol.Job:
    return {
        "protocol": protocol.PROTOCOL,
        "run_id": "test",
        "controller": "tester@here",
        "workdir": str(workdir),
        "cases": cases,
    }


def serve(
    workdir: Path,
    cases: list[protocol.Case],
    python: str = sys.executable,
    env: dict[str, str] | None = None,
    code: int = 0,
    heartbeats: bool = False,
) -> list[dict[str, Any]]:
    """Run ``agent.pyz serve`` on a job as the controller does; its events, each checked
    against the protocol's types (unknown keys, wrong types and missing keys fail), with
    heartbeats left out unless ``heartbeats``."""
    proc = subprocess.run(
        [python, str(build_agent().path), "serve"],
        input=json.dumps(make_job(workdir, cases)) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == code, proc.stderr
    events = [dict(protocol.parse_event(line)) for line in proc.stdout.splitlines()]
    for event in events:
        typeguard.check_type(event, protocol.Event)
    return [e for e in events if heartbeats or e["event"] != "heartbeat"]


def of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == kind]
