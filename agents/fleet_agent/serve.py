"""The agent's main loop: read the job, say hello, run each case in a fresh worker."""

import fcntl
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
from typing import IO, Any, Dict, List

from fleet_agent import PROTOCOL, __version__, runtimes, sysinfo
from fleet_agent.protocol import emit

# A worker killed by SIGKILL that we did not kill ourselves was the kernel's OOM killer.
_OOM_SIGNALS = (-signal.SIGKILL,)


def serve(inp: IO[str], out: IO[str]) -> int:
    job = json.loads(inp.readline())
    emit(
        out,
        "hello",
        agent_version=__version__,
        protocol=PROTOCOL,
        python=platform.python_version(),
        runtimes=runtimes.available(),
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
        run_worker(case, out)


def run_worker(case: Dict[str, Any], out: IO[str]) -> None:
    """Run one case in a fresh process, relaying its events; turn its death into a kind."""
    argv = [sys.executable, sys.argv[0], "worker"]
    timeout = float(case.get("timeout_s", 300))
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
        proc.communicate()
        emit(
            out,
            "case_error",
            case=case["id"],
            kind="timeout",
            message="no result after {:g} s".format(timeout),
        )
        return
    events: List[str] = [line for line in stdout.splitlines() if line.startswith("{")]
    for line in events:
        out.write(line + "\n")
    out.flush()
    if events and proc.returncode == 0:
        return
    tail = " | ".join(stderr.strip().splitlines()[-3:])
    if proc.returncode in _OOM_SIGNALS:
        kind, message = "out_of_memory", "worker killed (SIGKILL) by the kernel's OOM killer"
    else:
        kind, message = "error", "worker exited with {}: {}".format(proc.returncode, tail)
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
