"""The agent's main loop: read the job, say hello, run each case's repetitions in fresh
workers, combine them into one result.

The agent itself stays small: it never imports a runtime (``hello`` reads the installed
versions from package metadata) and imports numpy only to combine a case's repetitions, so
its start-up and memory are not the runtime's (bench/agent_footprint.py), and a runtime that
crashes takes down one worker, never the agent.
"""

import fcntl
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
from typing import IO, Any, Dict, List, Optional, Tuple

from fleet_agent import PROTOCOL, __version__, memory, sysinfo, thermal
from fleet_agent.protocol import emit


def serve(inp: IO[str], out: IO[str]) -> int:
    job = json.loads(inp.readline())
    emit(
        out,
        "hello",
        agent_version=__version__,
        protocol=PROTOCOL,
        python=platform.python_version(),
        runtimes=sysinfo.runtimes_installed(),
    )
    if job.get("protocol") != PROTOCOL:
        emit(
            out,
            "fatal",
            message="protocol mismatch: controller speaks {}, agent {} speaks {}".format(
                job.get("protocol"), __version__, PROTOCOL
            ),
        )
        return 2
    with open(os.path.join(job["workdir"], "agent.lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            emit(out, "fatal", message="device busy: another fleet run holds " + lock.name)
            return 2
        emit(out, "sysinfo", **sysinfo.collect())
        run_cases(job["cases"], out)
    emit(out, "done")
    return 0


def run_cases(cases: List[Dict[str, Any]], out: IO[str]) -> None:
    verified: Dict[str, bool] = {}
    for case in cases:
        emit(out, "case_start", case=case["id"])
        artifact = case["artifact"]
        if artifact not in verified:
            verified[artifact] = _sha256(artifact) == case["sha256"]
        if not verified[artifact]:
            emit(
                out,
                "case_error",
                case=case["id"],
                kind="invalid_model",
                message="{} does not match its sha256; it will be sent again".format(artifact),
            )
            if os.path.exists(artifact):  # a corrupt cached file must not be used again
                os.unlink(artifact)
            continue
        run_case(case, out)


def run_case(case: Dict[str, Any], out: IO[str]) -> None:
    """All repetitions of one case, each in a fresh worker; one result, or one case_error
    (the first repetition that fails ends the case)."""
    count = max(1, int(case["settings"].get("repetitions", 1)))
    watch = thermal.Watch()
    done: List[Dict[str, Any]] = []
    try:
        for index in range(count):
            body = run_worker(dict(case, repetition=index), out)
            if body is None:
                return
            done.append(body)
            # Also keeps the controller's idle timer from running out on long cases.
            emit(out, "progress", case=case["id"], repetition=index + 1, repetitions=count)
    finally:
        watched = watch.stop()
    # Imported here: numpy would make every start of the agent slower and bigger, also for
    # a job that ends at hello (protocol mismatch, device busy).
    from fleet_agent import aggregate

    tags, fields, generation = aggregate.combine(done, watched, case)
    emit(out, "result", case=case["id"], tags=tags, fields=fields, generation=generation)


def run_worker(case: Dict[str, Any], out: IO[str]) -> Optional[Dict[str, Any]]:
    """One repetition in a fresh process: its ``repetition`` event's body, or None after
    relaying (or making) the case_error that says why there is none. ``timeout_s`` bounds
    each repetition."""
    argv = [sys.executable, sys.argv[0], "worker"]
    timeout = float(case.get("timeout_s", 300))
    kills_before = memory.oom_kills()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
    )
    try:
        stdout, stderr = proc.communicate(json.dumps(case), timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        stage = _events(stdout)[1]
        message = "no result after {:g} s (timeout_s), while in {}".format(timeout, stage)
        _case_error(out, case, "timeout", message)
        return None
    sys.stderr.write(stderr)  # the runtime's own messages, for the controller's log
    events, stage = _events(stdout)
    for event in events:
        if event.get("event") == "repetition":
            return event
        if event.get("event") == "case_error":
            emit(out, **event)
            return None
    kind, message = _death(proc.returncode, stage, stderr, kills_before)
    _case_error(out, case, kind, message)
    return None


def _events(stdout: str) -> Tuple[List[Dict[str, Any]], str]:
    """A worker's events, and the last stage it began ("start" before any)."""
    events: List[Dict[str, Any]] = []
    stage = "start"
    for line in stdout.splitlines():
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:  # a runtime's own output that happens to start with "{"
                continue
            if event.get("event") == "stage":
                stage = str(event["stage"])
            else:
                events.append(event)
    return events, stage


def _death(code: int, stage: str, stderr: str, kills_before: Optional[int]) -> Tuple[str, str]:
    """The kind and message for a worker that ended without an event."""
    if code == -signal.SIGKILL:
        kills_after = memory.oom_kills()
        limit = sysinfo.memory_limit_mb()
        where = ", memory limit {:.0f} MB".format(limit) if limit is not None else ""
        if kills_before is None or kills_after is None:
            return (
                "out_of_memory",
                "worker killed (SIGKILL) in {}, most likely for memory{}".format(stage, where),
            )
        if kills_after > kills_before:
            return "out_of_memory", "worker killed by the kernel's OOM killer in {}{}".format(
                stage, where
            )
        return (
            "error",
            "worker killed (SIGKILL) in {} by something other than the OOM killer".format(stage),
        )
    if code < 0 and stage == "load":
        # Older TFLite builds crash on a malformed file instead of raising.
        return "invalid_model", "the runtime crashed loading the model ({})".format(
            _signal_name(-code)
        )
    tail = " | ".join(stderr.strip().splitlines()[-3:])
    how = _signal_name(-code) if code < 0 else "exit status {}".format(code)
    return "error", "worker died in {} ({}): {}".format(stage, how, tail or "no output")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "signal {}".format(number)


def _case_error(out: IO[str], case: Dict[str, Any], kind: str, message: str) -> None:
    emit(out, "case_error", case=case["id"], kind=kind, message=message)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return ""
    return digest.hexdigest()
