"""Where the store's writes wait while its disk is full, so that none is lost.

The store keeps the writes it could not take in memory and, through `SpillFile`, in a spill
file: JSON Lines, one write a line, `fleet-spill-<run>.jsonl` in $TMPDIR, else the working
directory, else home (those on another disk than the store's first). `read_spill` reads one
back for `fleet results import`. `disk_full` tells a full disk from any other failure.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from fleet.errors import ConfigError
from fleet.results.record import Record, make_record

SQLITE_FULL = 13  # the primary result code of "database or disk is full"
# An I/O error with less than this free beside the store is a full disk (SQLite reports a
# shared-memory file it cannot grow as "disk I/O error").
LOW_SPACE_BYTES = 1 << 20

# A run's start or finish waiting for the store: {"op": "start"|"finish", "run_id": ...}.
Op = dict[str, Any]
# A write waiting for the store; in a spill file, one line of JSON each (records: "op": "record").
Pending = Record | Op


class SpillFile:
    """The spill file of one store, once its disk is full; `path` is None while there is
    none (the disk has room, or no place had room for it either)."""

    def __init__(self, store: Path, warn: Callable[[str], None]) -> None:
        self.store = store  # the store's own file, for the messages
        self.warn = warn
        self.path: Path | None = None
        self.where = ""  # which place the spill file is in, for the messages
        self.kept = 0  # how many of the waiting writes are in it

    def keep(self, pending: Sequence[Pending]) -> None:
        """Append what waits (oldest first) to the spill file, or start one in the next
        place with room."""
        if self.path is not None:
            new = pending[self.kept :]
            if not new or append(self.path, _lines(new)):
                self.kept = len(pending)
                return
        name = f"fleet-spill-{_run_of(pending[0]) or os.getpid()}.jsonl"
        for where, folder in self._places():
            spill = folder / name
            if spill != self.path and append(spill, _lines(pending), fresh=True):
                if self.path is not None:
                    self.path.unlink(missing_ok=True)
                self.path, self.where, self.kept = spill, where, len(pending)
                self.warn(
                    f"no space left on device for the store ({self.store}): results kept in"
                    f" memory and in {spill} ({where}) and retried with each new one; if the"
                    f" disk stays full: `fleet results import {spill} --store {self.store}`"
                )
                return
        if self.path is not None or self.kept == 0:
            self.warn(
                f"no space left on device for the store ({self.store}), nor for a spill file"
                f" in {', '.join(str(f) for _, f in self._places())}: results kept in"
                " memory only"
            )
        self.path, self.kept = None, -1  # -1: said so already

    def taken(self, pending: Sequence[Pending]) -> None:
        """The store has taken every write that waited: the spill file goes."""
        if self.path is not None:
            count = sum(isinstance(item, Record) for item in pending)
            self.warn(
                f"the store ({self.store}) has space again: the {count} record(s) of"
                f" {self.path} are in it now; removed that file"
            )
            self.path.unlink(missing_ok=True)
            self.path = None
        self.kept = 0

    def full_message(self, pending: Sequence[Pending]) -> str:
        """What a run that ends with writes still waiting says, and where they are."""
        records = [item for item in pending if isinstance(item, Record)]
        results = sum(record.measurement == "result" for record in records)
        counts = f"{results} result(s) ({len(records)} record(s))"
        full = f"no space left on device for the store ({self.store})"
        if self.path is None:
            # The last place left: the terminal, or CI's log.
            sys.stderr.write(_lines(pending).decode())
            return (
                f"{full}: {counts} printed above as JSON Lines, no room for a spill file"
                " either; save them to a file, free space, then `fleet results import FILE`"
            )
        return (
            f"{full}: {counts} kept in {self.path} ({self.where}); free space, then"
            f" `fleet results import {self.path} --store {self.store}`"
        )

    def _places(self) -> list[tuple[str, Path]]:
        """$TMPDIR, the working directory and home, those on another disk than the store
        first."""
        import tempfile  # only on a full disk: `fleet --help` stays quick

        places: list[tuple[str, Path]] = []
        for where, get in (
            ("$TMPDIR", tempfile.gettempdir),
            ("the working directory", os.getcwd),
            ("home", lambda: str(Path.home())),
        ):
            try:
                folder = Path(get())
            except (OSError, RuntimeError):
                continue
            if all(folder != known for _, known in places):
                places.append((where, folder))
        return sorted(places, key=lambda place: _same_disk(place[1], self.store.parent))


def read_spill(spill: Path) -> list[Pending]:
    """The writes a spill file holds, in order; ConfigError naming the line that is not one."""
    try:
        lines = spill.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{spill}: cannot read the spill file ({exc})") from None
    return [_parse(spill, number, line) for number, line in enumerate(lines, 1) if line]


def disk_full(exc: BaseException, path: Path) -> bool:
    """Whether a failure to write the store at path is for want of space."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if (isinstance(code, int) and code & 0xFF == SQLITE_FULL) or "disk is full" in str(exc):
        return True
    if "disk I/O error" in str(exc):
        try:
            return free_bytes(path.parent) < LOW_SPACE_BYTES
        except OSError:
            return False
    return False


def free_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def append(path: Path, data: bytes, fresh: bool = False) -> bool:
    """Write data at the end of a file (or in place of it), all or nothing: False, with the
    file as it was, when it cannot (a full disk there too)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if fresh else os.O_APPEND)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError:
        return False
    size = os.lseek(fd, 0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        return True
    except OSError:
        with suppress(OSError):
            os.ftruncate(fd, size)
        return False
    finally:
        os.close(fd)


def _same_disk(folder: Path, other: Path) -> bool:
    try:
        return folder.stat().st_dev == other.stat().st_dev
    except OSError:
        return True


def _run_of(item: Pending) -> str:
    """The run a write belongs to, as much of it as a file name may hold."""
    run = item.run_id if isinstance(item, Record) else str(item["run_id"])
    return "".join(c for c in run if c.isalnum() or c in "-_")


def _lines(items: Sequence[Pending]) -> bytes:
    """Writes as the lines of a spill file."""
    ops = (
        {
            "op": "record",
            "measurement": item.measurement,
            "time_ns": item.time_ns,
            "tags": dict(item.tags),
            "fields": dict(item.fields),
        }
        if isinstance(item, Record)
        else item
        for item in items
    )
    return "".join(json.dumps(op) + "\n" for op in ops).encode()


def _parse(spill: Path, number: int, line: str) -> Pending:
    """One line of a spill file, checked enough that the import cannot store garbage."""
    expected = {
        "start": {"run_id": str, "suite": str, "devices": list, "started_ns": int},
        "record": {"measurement": str, "time_ns": int, "tags": dict, "fields": dict},
        "finish": {"run_id": str, "finished_ns": int, "exit_code": int},
    }
    try:
        op = json.loads(line)
        keys = expected[op["op"]]
        if all(isinstance(op[key], kind) for key, kind in keys.items()):
            if op["op"] != "record":
                return dict(op)
            return make_record(op["measurement"], op["tags"], op["fields"], op["time_ns"])
    except (ValueError, TypeError, KeyError):
        pass
    raise ConfigError(f"{spill}:{number}: not a line of a fleet spill file")
