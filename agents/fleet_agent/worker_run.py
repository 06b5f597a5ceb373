"""One repetition in a fresh worker process, watched from the agent: its limits, and why it
died when it gives no result.

The worker says each stage as it begins (``import``, ``load``, ``measure``, ...) and when its
first load and first run are done (``loaded``). A repetition has ``timeout_s``; where the
provider builds an engine at its first load (``engine_cache.ENGINE_PROVIDERS``: TensorRT,
CoreML), the time until ``loaded`` has ``load_timeout_s`` of its own instead, and
``timeout_s`` counts from there: a TensorRT build on a Jetson takes minutes, and it is not a
hung repetition.
While it builds, the agent says so on stderr every ``BUILD_NOTE_S`` (the controller's log),
and its heartbeats keep the controller waiting.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any, Dict, List, Optional, Tuple, cast

from fleet_agent import memory, probes
from fleet_agent.engine_cache import ENGINE_PROVIDERS
from fleet_agent.lifeline import Lifeline
from fleet_agent.protocol import Case, CaseError, ErrorKind, Repetition, RepetitionBody, write

BUILD_NOTE_S = 30.0
_POLL_S = 0.2


class _Output:
    """A worker's stdout and stderr, read as they come: the stage it is in, and since when."""

    def __init__(self, proc: "subprocess.Popen[str]") -> None:
        self.stdout: List[str] = []
        self.stderr: List[str] = []
        self.stage = "start"
        self.loaded_at: Optional[float] = None
        self._threads = [
            threading.Thread(target=self._read, args=(proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(proc.stderr, self.stderr), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, stream: Any, lines: List[str]) -> None:
        for line in stream:
            lines.append(line)
            if lines is self.stdout and line.startswith('{"event": "stage"'):
                self.stage = _stage(line, self.stage)
            elif lines is self.stdout and line.startswith('{"event": "loaded"'):
                self.loaded_at = time.monotonic()

    def join(self) -> Tuple[str, str]:
        for thread in self._threads:
            thread.join()
        return "".join(self.stdout), "".join(self.stderr)


def _stage(line: str, current: str) -> str:
    try:
        return str(json.loads(line)["stage"])
    except (ValueError, KeyError):
        return current


def _over(output: _Output, case: Case, index: int, started: float, notes: List[float]) -> str:
    """The timeout message once the worker is past its limit, else ""; a note on stderr
    every BUILD_NOTE_S while an engine builds."""
    settings = case["settings"]
    now = time.monotonic()
    if settings["provider"] in ENGINE_PROVIDERS and output.loaded_at is None:
        limit, name, used = settings["load_timeout_s"], "load_timeout_s", now - started
        if used - notes[-1] >= BUILD_NOTE_S:
            notes.append(used)
            sys.stderr.write(
                "fleet-agent: {} repetition {}: first load ({}, may build an engine) for {:.0f} s"
                " of load_timeout_s {:g}\n".format(case["id"], index + 1, output.stage, used, limit)
            )
            sys.stderr.flush()
    else:
        since = output.loaded_at if settings["provider"] in ENGINE_PROVIDERS else None
        limit, name, used = settings["timeout_s"], "timeout_s", now - (since or started)
    if used <= limit:
        return ""
    return "no result after {:g} s ({}), while in {}".format(limit, name, output.stage)


def run_worker(
    repetition: Repetition, out: IO[str], lifeline: Lifeline
) -> Optional[RepetitionBody]:
    """One repetition in a fresh process: its measurement, or None after relaying (or
    making) the case_error that says why there is none."""
    case = repetition["case"]
    argv = [sys.executable, sys.argv[0], "worker"]
    kills_before = memory.oom_kills()
    proc = lifeline.worker(argv)
    assert proc.stdin is not None  # for mypy: stdin=PIPE
    with contextlib.suppress(OSError):  # a worker that died at once: its exit says why
        proc.stdin.write(json.dumps(repetition))
        proc.stdin.close()
    output = _Output(proc)
    started, notes = time.monotonic(), [0.0]
    timeout = ""
    while proc.poll() is None and not timeout:
        try:
            proc.wait(_POLL_S)
        except subprocess.TimeoutExpired:
            timeout = _over(output, case, repetition["index"], started, notes)
    if timeout:
        # The worker's group: the tools it reads (nvidia-smi, tegrastats) go with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    stdout, stderr = output.join()
    lifeline.release(proc)
    events, stage = _events(stdout)
    if timeout:
        case_error(out, case, "timeout", timeout)
        return None
    sys.stderr.write(stderr)  # the runtime's own messages, for the controller's log
    for event in events:
        if event.get("event") == "repetition":
            return cast(RepetitionBody, event["body"])
        if event.get("event") == "case_error":
            write(out, event)
            return None
    kind, message = _death(proc.returncode, stage, stderr, kills_before)
    case_error(out, case, kind, message)
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


def _death(
    code: int, stage: str, stderr: str, kills_before: Optional[int]
) -> Tuple[ErrorKind, str]:
    """The kind and message for a worker that ended without an event."""
    if code == -signal.SIGKILL:
        kills_after = memory.oom_kills()
        limit = probes.memory_limit_mb()
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


def case_error(out: IO[str], case: Case, kind: ErrorKind, message: str) -> None:
    event: CaseError = {"event": "case_error", "case": case["id"], "kind": kind, "message": message}
    write(out, event)
