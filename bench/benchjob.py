"""The job `fleet run` would send an agent for one model, for the bench scripts that run the
agent directly: built by the controller's own code (plan, conversion cache, `build_job`), so
a bench measures what a run measures, with every setting a suite would have."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from fleet.inventory import local_device
from fleet.job import build_job
from fleet.plan import make_plan
from fleet.runner import prepare_artifacts
from fleet.suite import ModelSpec, Suite
from fleet_agent.protocol import Job


def agent_job(model: Path, workdir: str, **measure: Any) -> Job:
    """A one-case job for `model` (ONNX FP32) in `workdir`, its files copied there as a
    push would; `measure` as in a suite's `measure:`."""
    suite = Suite("bench", model, (ModelSpec(model.stem, model),), measure=measure)
    device = replace(local_device(), workdir=workdir)
    plan = make_plan(suite, [device])
    artifacts, refused = prepare_artifacts(plan, lambda device, message: None)
    work = build_job("bench", plan.devices[0], artifacts, refused)
    for local, remote in work.uploads:
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, remote)
    return work.job
