"""What one device's agent is sent: the files it lacks and the job, built from the plan.

Pure functions of the plan, the converted artifacts and the device: no connection, no lab,
so tests build a job the way a run does. The job's types are the agent's own
(`fleet_agent.protocol`), so mypy checks both ends of the wire.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fleet.artifacts import Artifact
from fleet.plan import Case, DevicePlan, Key, dataset_on_device
from fleet_agent import protocol


@dataclass(frozen=True)
class DeviceJob:
    job: protocol.Job
    cases: dict[str, Case]  # by case id, as events name them
    uploads: list[tuple[Path, str]]  # (local file, path on the device), each once


def build_job(
    run_id: str,
    plan: DevicePlan,
    artifacts: Mapping[Key, Artifact],
    refused: Mapping[Key, str],
) -> DeviceJob:
    """The job for one device: every case of its plan that was not refused. Files on the
    device are named by their sha256, so a file already there is never sent again."""
    workdir = plan.device.workdir
    outputs = f"{workdir}/outputs/{run_id}"  # made and removed by the agent
    job_cases: list[protocol.Case] = []
    cases: dict[str, Case] = {}
    uploads: dict[str, Path] = {}
    for case in plan.cases:
        if case.key in refused:
            continue
        artifact = artifacts[case.key]
        remote = f"{workdir}/cache/{artifact.sha256}{artifact.path.suffix}"
        uploads[remote] = artifact.path
        dataset = None
        if case.model.dataset is not None:
            dataset = dataset_on_device(workdir, case.model.dataset)
            uploads[dataset] = case.model.dataset
        reference = f"{outputs}/{case.model.name}.npy" if case.has_reference else None
        job_cases.append(
            {
                "id": case.id,
                "model": case.model.name,
                "artifact": remote,
                "sha256": artifact.sha256,
                "format": case.variant.format,
                "precision": case.variant.precision,
                "runtime": case.runtime,
                "task": case.task,
                "dataset": dataset,
                "save_outputs": reference if case.is_reference else None,
                "reference": reference if not case.is_reference else None,
                "inputs": case.inputs(artifact.card.inputs),
                "settings": case.settings,
            }
        )
        cases[case.id] = case
    job: protocol.Job = {
        "protocol": protocol.PROTOCOL,
        "run_id": run_id,
        "controller": f"{getpass.getuser()}@{socket.gethostname()}",
        "workdir": workdir,
        "cases": job_cases,
    }
    return DeviceJob(job, cases, [(path, remote) for remote, path in uploads.items()])
