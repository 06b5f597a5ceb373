"""The agent's tie to its controller: a heartbeat out, and a prompt stop when the tie breaks.

Over SSH nothing tells a running command that the connection went: the agent would time the
rest of its repetition and hold the device's lock for nothing. So while it works the agent
sends a ``heartbeat`` every ``HEARTBEAT_S`` (the controller calls a longer silence a hung
device) and stops its workers and itself when

- its parent changes (sshd's session process, or the local controller, is gone),
- a write to stdout fails (the channel was closed: Ctrl-C, a dropped connection), or
- it gets SIGTERM or SIGHUP.

Stopping kills each worker's process group, removes this run's outputs and exits; the kernel
releases the device lock with the agent's open files.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import threading
from typing import IO, Any, Set

from fleet_agent.protocol import HEARTBEAT_S, write

_CHECK_S = 0.5  # how often the parent is looked at: a stop within a second of losing it


class Lifeline:
    def __init__(self, out: IO[str], outputs: str) -> None:
        self._out = out
        self._outputs = outputs
        self._parent = os.getppid()
        self._workers: Set["subprocess.Popen[str]"] = set()
        # Re-entrant: a signal can arrive while the main thread holds it.
        self._lock = threading.RLock()
        self._done = threading.Event()

    def start(self) -> None:
        for number in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, self._on_signal)
        threading.Thread(target=self._watch, name="lifeline", daemon=True).start()

    def stop(self) -> None:
        """The job is done: no more heartbeats."""
        self._done.set()

    def worker(self, argv: Any) -> "subprocess.Popen[str]":
        """Start a worker in its own process group, so that a stop takes all it started."""
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
            start_new_session=True,
        )
        with self._lock:
            self._workers.add(proc)
        return proc

    def release(self, proc: "subprocess.Popen[str]") -> None:
        with self._lock:
            self._workers.discard(proc)

    def _watch(self) -> None:
        ticks = 0
        while not self._done.wait(_CHECK_S):
            if os.getppid() != self._parent:
                self._lost()
            ticks += 1
            if ticks * _CHECK_S >= HEARTBEAT_S:
                ticks = 0
                try:
                    write(self._out, {"event": "heartbeat"})
                except (OSError, ValueError):  # broken pipe, or stdout closed
                    self._lost()

    def _on_signal(self, number: int, frame: Any) -> None:
        self._lost()

    def _lost(self) -> None:
        with self._lock:
            for proc in self._workers:
                with contextlib.suppress(OSError):  # ended already
                    os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(self._outputs, ignore_errors=True)
        os._exit(3)  # from any thread: the main one may be waiting on a worker
