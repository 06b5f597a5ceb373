"""The local SQLite store: every result is written here first, so nothing is lost.

A full disk does not lose a record either. A write that fails for want of space keeps its
record in memory, appends it to a spill file (JSON Lines, on another disk where there is
one: $TMPDIR, else the working directory, else home) and tries the store again with the next
write; once the store takes them, the spill file goes. A run that ends with records still
out of the store raises `StoreFullError` (exit 2) naming the spill file, which `fleet
results import` reads back. So that such a run does not stay "running" in the store, a run
keeps a small reserve file beside it (`<store>-reserve`), given up to write its status.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.errors import ConfigError, FleetError
from fleet.results.lineprotocol import to_line
from fleet.results.record import Record, make_record

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    suite TEXT NOT NULL,
    devices TEXT NOT NULL,
    started_ns INTEGER NOT NULL,
    finished_ns INTEGER,
    exit_code INTEGER
);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    measurement TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    tags TEXT NOT NULL,
    fields TEXT NOT NULL,
    line TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS records_run ON records (run_id);
CREATE TABLE IF NOT EXISTS pins (
    suite TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    pinned_ns INTEGER NOT NULL
);
-- What `fleet rerun` needs to run a run again (fleet/rerun.py's RunSpec, as JSON).
CREATE TABLE IF NOT EXISTS run_specs (
    run_id TEXT PRIMARY KEY,
    spec TEXT NOT NULL
);
"""

SQLITE_FULL = 13  # the primary result code of "database or disk is full"
# Enough for the WAL frames of one run's status, whatever else filled the disk.
RESERVE_BYTES = 64 * 1024
# While the disk is full, the store is tried again at most this often (each try rewrites
# every record waiting).
RETRY_S = 1.0
# An I/O error with less than this free beside the store is a full disk (SQLite reports a
# shared-memory file it cannot grow as "disk I/O error").
LOW_SPACE_BYTES = 1 << 20

# A run's start or finish waiting for the store: {"op": "start"|"finish", "run_id": ...}.
Op = dict[str, Any]
# A write waiting for the store; in a spill file, one line of JSON each (records: "op": "record").
Pending = Record | Op


class StoreFullError(FleetError):
    """The store's disk is full: some records are not in it (they are in a spill file)."""


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    suite: str
    devices: list[str]
    started_ns: int
    finished_ns: int | None
    exit_code: int | None
    results: int


def _stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class Store:
    """A results database in one file; safe to share between the runner's threads."""

    def __init__(self, path: Path, warn: Callable[[str], None] = _stderr) -> None:
        self.path = path
        self.warn = warn
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA busy_timeout=10000")
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            if _disk_full(exc, path):
                raise ConfigError(
                    f"no space left on device for the store ({path}): free some space there,"
                    " or use --store on another disk"
                ) from None
            raise ConfigError(f"{path}: cannot open the results store ({exc})") from exc
        self.lock = threading.Lock()
        self.reserve = path.with_name(path.name + "-reserve")
        self._pending: list[Pending] = []  # writes the store has not taken yet, oldest first
        self._spilled = 0  # how many of them are in the spill file
        self._spill: Path | None = None
        self._spill_where = ""  # which place the spill file is in, for the messages
        self._retry_at = 0.0
        if not self._has_lines(self.db):
            self._add_lines()

    @staticmethod
    def _has_lines(db: sqlite3.Connection) -> bool:
        return any(row[1] == "line" for row in db.execute("PRAGMA table_info(records)"))

    def _add_lines(self) -> None:
        """Give a store written before records kept their line (fleet 0.1.0's first spool) one
        line per record, once, so that every record can be pushed like a new one."""
        with self.transaction() as db:
            if self._has_lines(db):  # another process opened it first
                return
            db.execute("ALTER TABLE records ADD COLUMN line TEXT NOT NULL DEFAULT ''")
            rows = db.execute("SELECT id, measurement, time_ns, tags, fields FROM records")
            db.executemany(
                "UPDATE records SET line = ? WHERE id = ?",
                [(to_line(row_to_record(row[1:])), row[0]) for row in rows.fetchall()],
            )

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One thread at a time, committed on success (sqlite3 runs in autocommit mode)."""
        with self.lock, self._locked_transaction() as db:
            yield db

    @contextmanager
    def _locked_transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            # SQLite has already rolled back a transaction that hit a full disk.
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def start_run(self, run_id: str, suite: str, devices: Sequence[str]) -> None:
        self._keep_reserve()
        started = time.time_ns()
        self._write(
            {
                "op": "start",
                "run_id": run_id,
                "suite": suite,
                "devices": list(devices),
                "started_ns": started,
            }
        )

    def finish_run(self, run_id: str, exit_code: int) -> None:
        """The run's status; raises StoreFullError when some of its records are not in the
        store (a run stopped by a signal only warns: its exit code says why it ended)."""
        op = {
            "op": "finish",
            "run_id": run_id,
            "finished_ns": time.time_ns(),
            "exit_code": exit_code,
        }
        with self.lock:
            self._pending.append(op)
            self._flush()
            if not self._pending:
                return
            self._status_from_reserve(op)
            message = self._full_message()
        if exit_code >= 128:
            self.warn(message)
            return
        raise StoreFullError(message)

    def add(self, record: Record) -> int:
        """Store one record durably (committed before this returns); returns its id, or 0
        when the store's disk is full: the record then waits in memory and in the spill
        file, and goes in with a later write.

        Its line of line protocol is stored with it, so that no push has to encode it."""
        return self._write(record)

    def _write(self, item: Pending) -> int:
        with self.lock:
            self._pending.append(item)
            if len(self._pending) > 1 and time.monotonic() < self._retry_at:
                self._spill_pending()
                return 0
            return self._flush()

    def _flush(self) -> int:
        """Every pending write in one transaction; the last record's id (0 if none, or if the
        disk is full: then they stay pending, and spilled). The lock is held."""
        last = 0
        try:
            with self._locked_transaction():
                for item in self._pending:
                    last = self._apply(item)
        except (OSError, sqlite3.Error) as exc:
            if not _disk_full(exc, self.path):
                self._pending.pop()  # what the caller is told failed; earlier ones still wait
                raise
            self._retry_at = time.monotonic() + RETRY_S
            self._spill_pending()
            return 0
        if self._spill is not None:
            count = sum(isinstance(item, Record) for item in self._pending)
            self.warn(
                f"the store ({self.path}) has space again: the {count} record(s) of"
                f" {self._spill} are in it now; removed that file"
            )
            self._spill.unlink(missing_ok=True)
            self._spill = None
        self._pending.clear()
        self._spilled = 0
        return last

    def _apply(self, item: Pending) -> int:
        """One write in the open transaction; a record's id, else 0. Starting a run is
        idempotent and so is finishing it, so a write that waited can be replayed."""
        if isinstance(item, Record):
            cursor = self.db.execute(
                "INSERT INTO records (run_id, measurement, time_ns, tags, fields, line)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (item.run_id, *_row(item), to_line(item)),
            )
            return int(cursor.lastrowid or 0)
        op = item
        if op["op"] == "start":
            self.db.execute(
                "INSERT OR IGNORE INTO runs (run_id, suite, devices, started_ns)"
                " VALUES (?, ?, ?, ?)",
                (op["run_id"], op["suite"], json.dumps(op["devices"]), op["started_ns"]),
            )
            return 0
        self.db.execute(
            "UPDATE runs SET finished_ns = ?, exit_code = ? WHERE run_id = ?",
            (op["finished_ns"], op["exit_code"], op["run_id"]),
        )
        return 0

    def _spill_pending(self) -> None:
        """Append what waits to the spill file, or start one in the next place with room."""
        if self._spill is not None:
            new = self._pending[self._spilled :]
            if not new or _append(self._spill, _lines(new)):
                self._spilled = len(self._pending)
                return
        name = f"fleet-spill-{_run_of(self._pending[0]) or os.getpid()}.jsonl"
        for where, folder in self._spill_places():
            spill = folder / name
            if spill != self._spill and _append(spill, _lines(self._pending), fresh=True):
                if self._spill is not None:
                    self._spill.unlink(missing_ok=True)
                self._spill, self._spill_where, self._spilled = spill, where, len(self._pending)
                self.warn(
                    f"no space left on device for the store ({self.path}): results kept in"
                    f" memory and in {spill} ({where}) and retried with each new one; if the"
                    f" disk stays full: `fleet results import {spill} --store {self.path}`"
                )
                return
        if self._spill is not None or self._spilled == 0:
            self.warn(
                f"no space left on device for the store ({self.path}), nor for a spill file"
                f" in {', '.join(str(f) for _, f in self._spill_places())}: results kept in"
                " memory only"
            )
        self._spill, self._spilled = None, -1  # -1: said so already

    def _spill_places(self) -> list[tuple[str, Path]]:
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
        return sorted(places, key=lambda place: _same_disk(place[1], self.path.parent))

    def _keep_reserve(self) -> None:
        """Make the reserve file if it is missing and the disk has room to spare."""
        try:
            if self.reserve.exists():
                return
            if _free_bytes(self.path.parent) < 16 * RESERVE_BYTES:
                return
            # Random bytes: a compressing file system would not keep zeros on disk.
            if not _append(self.reserve, os.urandom(RESERVE_BYTES), fresh=True):
                self.reserve.unlink(missing_ok=True)
        except OSError:
            pass

    def _status_from_reserve(self, finish: Op) -> None:
        """With the disk still full at the end of a run: free the reserve and write the run's
        status alone, as exit 2 (its records are not in the store); the spill file keeps the
        real one, which an import sets. The lock is held."""
        self.reserve.unlink(missing_ok=True)
        starts = [op for op in self._pending if not isinstance(op, Record) and op["op"] == "start"]
        code = finish["exit_code"] if finish["exit_code"] not in (0, 1) else 2
        try:
            with self._locked_transaction():
                for op in [*starts, {**finish, "exit_code": code}]:
                    self._apply(op)
        except (OSError, sqlite3.Error) as exc:
            if not _disk_full(exc, self.path):
                raise

    def _full_message(self) -> str:
        records = [item for item in self._pending if isinstance(item, Record)]
        results = sum(record.measurement == "result" for record in records)
        counts = f"{results} result(s) ({len(records)} record(s))"
        full = f"no space left on device for the store ({self.path})"
        if self._spill is None:
            # The last place left: the terminal, or CI's log.
            sys.stderr.write(_lines(self._pending).decode())
            return (
                f"{full}: {counts} printed above as JSON Lines, no room for a spill file"
                " either; save them to a file, free space, then `fleet results import FILE`"
            )
        return (
            f"{full}: {counts} kept in {self._spill} ({self._spill_where}); free space, then"
            f" `fleet results import {self._spill} --store {self.path}`"
        )

    def import_spill(self, spill: Path) -> tuple[int, int]:
        """Read a spill file back into the store: (records added, records already there).
        Importing one twice adds nothing the second time."""
        try:
            lines = spill.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{spill}: cannot read the spill file ({exc})") from None
        items = [_parse(spill, number, line) for number, line in enumerate(lines, 1) if line]
        added = present = 0
        try:
            with self.transaction() as db:
                for item in items:
                    if isinstance(item, Record):
                        found = db.execute(
                            "SELECT 1 FROM records WHERE measurement = ? AND time_ns = ?"
                            " AND tags = ? AND fields = ?",
                            _row(item),
                        ).fetchone()
                        if found:
                            present += 1
                            continue
                        added += 1
                    self._apply(item)
        except (OSError, sqlite3.Error) as exc:
            if not _disk_full(exc, self.path):
                raise
            raise StoreFullError(
                f"no space left on device for the store ({self.path}): nothing imported from"
                f" {spill}; free space there and run it again"
            ) from None
        return added, present

    def records(self, run_id: str | None = None, measurement: str | None = None) -> list[Record]:
        query = "SELECT measurement, time_ns, tags, fields FROM records WHERE 1=1"
        params: list[str] = []
        if run_id is not None:
            query += " AND run_id = ?"
            params.append(run_id)
        if measurement is not None:
            query += " AND measurement = ?"
            params.append(measurement)
        with self.lock:
            rows = self.db.execute(query + " ORDER BY id", params).fetchall()
        return [row_to_record(row) for row in rows]

    def runs(self) -> list[RunInfo]:
        with self.lock:
            rows = self.db.execute(
                "SELECT r.run_id, r.suite, r.devices, r.started_ns, r.finished_ns, r.exit_code,"
                " (SELECT COUNT(*) FROM records x WHERE x.run_id = r.run_id"
                "  AND x.measurement = 'result')"
                " FROM runs r ORDER BY r.started_ns"
            ).fetchall()
        return [
            RunInfo(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5], row[6])
            for row in rows
        ]

    def find_run(self, run_id: str | None) -> RunInfo:
        """The run named by its id or a unique prefix of it; the latest run when None."""
        runs = self.runs()
        if not runs:
            raise ConfigError(f"{self.path}: no runs yet; `fleet run SUITE` makes one")
        if run_id is None:
            return runs[-1]
        matches = [r for r in runs if r.run_id.startswith(run_id)]
        if len(matches) != 1:
            problem = "no run" if not matches else f"{len(matches)} runs"
            raise ConfigError(
                f"{self.path}: {problem} matching {run_id!r};"
                " `fleet results list` shows the run ids"
            )
        return matches[0]

    def pin(self, run_id: str) -> RunInfo:
        """Make the run (a unique prefix will do) its suite's regression baseline, in place
        of any run pinned before; fleet.regressions judges the suite's later runs against it."""
        run = self.find_run(run_id)
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO pins (suite, run_id, pinned_ns) VALUES (?, ?, ?)",
                (run.suite, run.run_id, time.time_ns()),
            )
        return run

    def unpin(self, suite: str) -> str | None:
        """Remove the suite's pinned run; returns the run id that was pinned, if any."""
        with self.transaction() as db:
            row = db.execute("SELECT run_id FROM pins WHERE suite = ?", (suite,)).fetchone()
            db.execute("DELETE FROM pins WHERE suite = ?", (suite,))
        return None if row is None else str(row[0])

    def pinned(self, suite: str) -> str | None:
        """The run pinned as the suite's baseline, if any."""
        with self.lock:
            row = self.db.execute("SELECT run_id FROM pins WHERE suite = ?", (suite,)).fetchone()
        return None if row is None else str(row[0])

    def pins(self) -> list[tuple[str, str, int]]:
        """(suite, run id, when pinned in ns) of every pin, by suite."""
        with self.lock:
            rows = self.db.execute(
                "SELECT suite, run_id, pinned_ns FROM pins ORDER BY suite"
            ).fetchall()
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    def set_run_spec(self, run_id: str, spec: dict[str, Any]) -> None:
        """Keep what `fleet rerun` needs to run this run again (fleet.rerun.RunSpec). A full
        disk only warns: the run's results are what matters, and they are kept."""
        try:
            with self.transaction() as db:
                db.execute(
                    "INSERT OR REPLACE INTO run_specs (run_id, spec) VALUES (?, ?)",
                    (run_id, json.dumps(spec, sort_keys=True)),
                )
        except (OSError, sqlite3.Error) as exc:
            if not _disk_full(exc, self.path):
                raise
            self.warn(
                f"no space left on device for the store ({self.path}): run {run_id} cannot be"
                " rerun (`fleet rerun` reads what it ran from there)"
            )

    def run_spec(self, run_id: str) -> dict[str, Any] | None:
        """What `set_run_spec` kept for the run, None if nothing (an older or stopped run)."""
        with self.lock:
            row = self.db.execute(
                "SELECT spec FROM run_specs WHERE run_id = ?", (run_id,)
            ).fetchone()
        if row is None:
            return None
        spec: dict[str, Any] = json.loads(row[0])
        return spec


def row_to_record(row: tuple[str, int, str, str]) -> Record:
    measurement, time_ns, tags, fields = row
    return Record(measurement, json.loads(tags), json.loads(fields), time_ns)


def _row(record: Record) -> tuple[str, int, str, str]:
    """measurement, time_ns, tags and fields as the records table keeps them."""
    return (
        record.measurement,
        record.time_ns,
        json.dumps(dict(record.tags), sort_keys=True),
        json.dumps(dict(record.fields), sort_keys=True),
    )


def _disk_full(exc: BaseException, path: Path) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if (isinstance(code, int) and code & 0xFF == SQLITE_FULL) or "disk is full" in str(exc):
        return True
    if "disk I/O error" in str(exc):
        try:
            return _free_bytes(path.parent) < LOW_SPACE_BYTES
        except OSError:
            return False
    return False


def _free_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


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


def _append(path: Path, data: bytes, fresh: bool = False) -> bool:
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
