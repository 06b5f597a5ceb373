"""The agent's main loop: read the job, say hello, take the device's lock (and its GPUs',
``gpu_lock.py``), run each case's repetitions in fresh workers (``worker_run.py``), combine
them into one result.

The agent itself stays small: it never imports a runtime (``hello`` reads the installed
versions from package metadata) and imports numpy only to combine a case's repetitions, so
its start-up and memory are not the runtime's (bench/agent_footprint.py), and a runtime that
crashes takes down one worker, never the agent.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import platform
import shutil
import time
from typing import IO, Dict, List, cast

from fleet_agent import __version__, sysinfo, thermal
from fleet_agent.gpu_lock import GpuLocks
from fleet_agent.lifeline import Lifeline
from fleet_agent.protocol import (
    PROTOCOL,
    Case,
    FatalReason,
    Job,
    Repetition,
    RepetitionBody,
    write,
)
from fleet_agent.worker_run import case_error, run_worker

# The device's built engines (engine_cache.py), kept in the work folder between runs.
ENGINES = "engine-cache"


def serve(inp: IO[str], out: IO[str]) -> int:
    received = json.loads(inp.readline())
    speaks = isinstance(received, dict) and received.get("protocol") == PROTOCOL
    missing = _missing(cast(Job, received)) if speaks else []
    write(
        out,
        {
            "event": "hello",
            "agent_version": __version__,
            "protocol": PROTOCOL,
            "python": platform.python_version(),
            "runtimes": sysinfo.runtimes_installed(),
            "missing": missing,
        },
    )
    if not speaks:
        version = received.get("protocol") if isinstance(received, dict) else None
        message = "protocol mismatch: controller speaks {}, agent {} speaks {}".format(
            version, __version__, PROTOCOL
        )
        write(out, {"event": "fatal", "reason": "protocol", "message": message})
        return 2
    job = cast(Job, received)  # the controller built it from the same types
    if missing:
        # The controller sends them and starts the agent again: a run pushes nothing, and
        # opens nothing but this one command, when the device has every file.
        return 0
    lock_path = os.path.join(job["workdir"], "agent.lock")
    try:
        # "a+": opening must not empty the file while another run holds it (it names it).
        lock = open(lock_path, "a+")  # noqa: SIM115 - the with below closes it
    except OSError as exc:  # a read-only or full work folder, or none at all
        _cannot(out, "open", lock_path, exc)
        return 2
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            holder = lock.read().strip() or "another fleet run"
            message = "device busy: held by " + holder
            write(out, {"event": "fatal", "reason": "busy", "message": message})
            return 2
        holder = "run {} from {} since {}".format(job["run_id"], job["controller"], _now())
        os.ftruncate(lock.fileno(), 0)
        with contextlib.suppress(OSError):  # a full disk: the flock alone is the lock
            os.write(lock.fileno(), holder.encode())
        gpus = GpuLocks()
        busy = gpus.acquire(_gpus(job), holder)
        if busy is not None:
            write(out, {"event": "fatal", "reason": "busy", "message": busy})
            return 2
        outputs = os.path.join(job["workdir"], "outputs")
        _remove_other_runs(outputs, job["run_id"])
        ours = os.path.join(outputs, job["run_id"])
        try:
            os.makedirs(ours, exist_ok=True)
        except OSError as exc:
            _cannot(out, "make", ours, exc)
            return 2
        lifeline = Lifeline(out, ours)
        lifeline.start()
        write(out, {"event": "sysinfo", "facts": sysinfo.collect()})
        run_cases(job["cases"], out, lifeline, ours, os.path.join(job["workdir"], ENGINES))
        lifeline.stop()
        gpus.release()
        # The reference outputs only served this run's comparisons.
        shutil.rmtree(ours, ignore_errors=True)
    write(out, {"event": "done"})
    return 0


def _gpus(job: Job) -> List[int]:
    """The GPUs of this host the job's cases run on (inventory fleet_gpu: nvidia-smi's index,
    whatever CUDA_VISIBLE_DEVICES says, so that every agent locks a GPU by the same number)."""
    return [c["settings"]["gpu"] for c in job["cases"] if c["settings"]["gpu"] is not None]


def _cannot(out: IO[str], verb: str, path: str, exc: OSError) -> None:
    """The agent cannot use its work folder: one fatal event naming the path and why."""
    reason: FatalReason = "disk_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "error"
    message = "cannot {} {}: {}".format(verb, path, exc.strerror or exc)
    write(out, {"event": "fatal", "reason": reason, "message": message})


def _missing(job: Job) -> List[str]:
    """The files the job's cases read (artifacts, data sets) that are not here."""
    wanted = [case["artifact"] for case in job["cases"]]
    wanted += [case["dataset"] for case in job["cases"] if case["dataset"]]
    return sorted({path for path in wanted if not os.path.isfile(path)})


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def _remove_other_runs(outputs: str, run_id: str) -> None:
    """Outputs left by a run that ended without cleaning up (no run but this one can be
    using them: it holds the lock)."""
    if os.path.isdir(outputs):
        for name in os.listdir(outputs):
            if name != run_id:
                shutil.rmtree(os.path.join(outputs, name), ignore_errors=True)


def run_cases(
    cases: List[Case], out: IO[str], lifeline: Lifeline, outputs: str, engines: str
) -> None:
    """Each case in turn; ``engines`` is the device's engine cache (``engine_cache.py``)."""
    verified: Dict[str, bool] = {}
    for case in cases:
        write(out, {"event": "case_start", "case": case["id"]})
        target = case["save_outputs"]
        if target and not _inside(target, outputs):
            # The one file a case writes: never outside this run's folder, whatever the job.
            case_error(
                out, case, "error", "refusing to write {}: not in {}".format(target, outputs)
            )
            continue
        artifact = case["artifact"]
        if artifact not in verified:
            verified[artifact] = _sha256(artifact) == case["sha256"]
        if not verified[artifact]:
            message = "{} does not match its sha256; it will be sent again".format(artifact)
            case_error(out, case, "invalid_model", message)
            with contextlib.suppress(OSError):  # a corrupt file must not be used again
                os.unlink(artifact)
            continue
        run_case(case, out, lifeline, engines)


def run_case(case: Case, out: IO[str], lifeline: Lifeline, engines: str) -> None:
    """All repetitions of one case, each in a fresh worker; one result, or one case_error
    (the first repetition that fails ends the case)."""
    count = case["settings"]["repetitions"]
    watch = thermal.Watch()
    done: List[RepetitionBody] = []
    try:
        for index in range(count):
            repetition: Repetition = {"case": case, "index": index, "engine_cache": engines}
            body = run_worker(repetition, out, lifeline)
            if body is None:
                return
            done.append(body)
            # Also keeps the controller's idle timer from running out on long cases.
            write(
                out,
                {
                    "event": "progress",
                    "case": case["id"],
                    "repetition": index + 1,
                    "repetitions": count,
                },
            )
    finally:
        watched = watch.stop()
    # Imported here: numpy would make every start of the agent slower and bigger, also for
    # a job that ends at hello (protocol mismatch, device busy).
    from fleet_agent import aggregate

    write(out, aggregate.combine(done, watched, case))


def _inside(path: str, folder: str) -> bool:
    root = os.path.realpath(folder)
    return os.path.commonpath([root, os.path.realpath(path)]) == root


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return ""
    return digest.hexdigest()
