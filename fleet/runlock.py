"""The controller's run lock (`fleet run --exclusive`): two runs of one schedule never overlap.

A scheduled run that finds the previous one still going either waits for it (up to a
timeout) or skips, saying once who holds the lock. The lock is `flock` on
`$FLEET_HOME/locks/NAME.lock`: the kernel releases it when its process ends, however it
ends, so a crashed run leaves no stale lock behind. The holder writes who it is into the
file (pid, start time, suite, user and host) for the next run's message.

The devices' own locks (the agent's `flock` on its work folder) still keep two controllers
off one device; this lock keeps a nightly from piling up behind a slow one.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Literal

from fleet import paths
from fleet.errors import ConfigError, FleetError

IfBusy = Literal["wait", "skip"]
IF_BUSY: tuple[IfBusy, ...] = ("wait", "skip")
DEFAULT_TIMEOUT_S = 3600.0
POLL_S = 0.5
# A holder writes its line right after it took the lock; an empty file is read again this
# long before the holder is called unknown.
_WRITING_S = 1.0

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


class RunLockTimeout(FleetError):
    """The previous run still held the lock when the wait ran out."""


@dataclass(frozen=True)
class Holder:
    """Who holds a run lock, as the holder wrote it."""

    pid: int
    started_ns: int
    suite: str
    user: str
    host: str

    def describe(self) -> str:
        started = datetime.fromtimestamp(self.started_ns / 1e9, tz=timezone.utc)
        return (
            f"pid {self.pid} (suite {self.suite}, {self.user}@{self.host},"
            f" started {started:%Y-%m-%dT%H:%M:%SZ})"
        )


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ConfigError(
            f"run lock name {name!r}: use {NAME_RULE} (with --exclusive before SUITE_FILE,"
            " give the lock a name, or put --exclusive after SUITE_FILE)"
        )
    return name


def lock_path(name: str, directory: Path | None = None) -> Path:
    return (directory or paths.data_dir() / "locks") / f"{check_name(name)}.lock"


def holder(name: str, directory: Path | None = None) -> Holder | None:
    """Who holds the lock now; None when nobody does (or the lock file does not exist)."""
    path = lock_path(name, directory)
    if not path.exists():
        return None
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(handle)
        return None


@contextmanager
def exclusive(
    name: str | None,
    suite: str,
    *,
    if_busy: IfBusy = "wait",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    say: Callable[[str], None] = lambda line: None,
    directory: Path | None = None,
) -> Iterator[bool]:
    """Hold the run lock `name` (the suite's name when "") for the `with` block; None: no lock.

    Yields True while the lock is held. When another run holds it: with "skip", says one
    line naming the holder and yields False (the caller does nothing and exits 0); with
    "wait", says one line naming the holder and waits up to `timeout_s`, then raises
    RunLockTimeout.
    """
    if name is None:
        yield True
        return
    path = lock_path(name or suite, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        if not _acquire(handle, path, name or suite, if_busy, timeout_s, say):
            yield False
            return
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(_me(suite)) + "\n")
            handle.flush()
            yield True
        finally:
            # An empty file names nobody: the next run never reads a finished holder.
            handle.seek(0)
            handle.truncate()
            handle.flush()


def _acquire(
    handle: IO[str],
    path: Path,
    name: str,
    if_busy: IfBusy,
    timeout_s: float,
    say: Callable[[str], None],
) -> bool:
    started = time.monotonic()
    waiting = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        current = _read_holder(handle)
        if current is None and time.monotonic() - started < _WRITING_S:
            time.sleep(0.05)  # the holder has the lock and is writing its line
            continue
        who = current.describe() if current else "a process that did not say who it is"
        if if_busy == "skip":
            say(
                f"skipped: run lock {name!r} is held by {who}: the previous run is still"
                " going; this run did nothing (exit 0)"
            )
            return False
        if not waiting:
            say(f"waiting up to {timeout_s:g} s for run lock {name!r}, held by {who}")
            waiting = True
        if time.monotonic() - started >= timeout_s:
            raise RunLockTimeout(
                f"run lock {name!r} ({path}) is still held by {who} after {timeout_s:g} s:"
                " the previous run is still going; let it finish or stop it, or use"
                " --if-busy skip or a longer --lock-timeout"
            )
        time.sleep(POLL_S)


def _me(suite: str) -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "started_ns": time.time_ns(),
        "suite": suite,
        "user": getpass.getuser(),
        "host": socket.gethostname(),
    }


def _read_holder(handle: IO[str]) -> Holder | None:
    handle.seek(0)
    try:
        data = json.loads(handle.read(4096))
        return Holder(
            pid=int(data["pid"]),
            started_ns=int(data["started_ns"]),
            suite=str(data["suite"]),
            user=str(data["user"]),
            host=str(data["host"]),
        )
    except (ValueError, KeyError, TypeError):  # empty: the holder is writing, or another file
        return None
