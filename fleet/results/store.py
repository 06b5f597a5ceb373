"""The local SQLite store: every result is written here first, so nothing is lost.

A full disk does not lose a record either. A write that fails for want of space keeps its
record in memory, appends it to a spill file (JSON Lines, on another disk where there is
one: $TMPDIR, else the working directory, else home; `fleet.results.spill`) and tries the
store again with the next write; once the store takes them, the spill file goes. A run that
ends with records still out of the store raises `StoreFullError` (exit 2) naming the spill
file, which `fleet results import` reads back. So that such a run does not stay "running" in
the store, a run keeps a small reserve file beside it (`<store>-reserve`), given up to write
its status. The tables and the upgrade of an older store are in `fleet.results.store_db`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.errors import ConfigError, FleetError
from fleet.results.lineprotocol import to_line
from fleet.results.record import Record
from fleet.results.spill import Op, Pending, SpillFile, append, disk_full, free_bytes, read_spill
from fleet.results.store_db import (
    SCHEMA,
    add_lines,
    has_lines,
    immediate,
    record_row,
    row_to_record,
)

# Enough for the WAL frames of one run's status, whatever else filled the disk.
RESERVE_BYTES = 64 * 1024
# While the disk is full, the store is tried again at most this often (each try rewrites
# every record waiting).
RETRY_S = 1.0


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
            if disk_full(exc, path):
                raise ConfigError(
                    f"no space left on device for the store ({path}): free some space there,"
                    " or use --store on another disk"
                ) from None
            raise ConfigError(f"{path}: cannot open the results store ({exc})") from exc
        self.lock = threading.Lock()
        self.reserve = path.with_name(path.name + "-reserve")
        self._pending: list[Pending] = []  # writes the store has not taken yet, oldest first
        self._spill = SpillFile(path, warn)  # where they wait on disk
        self._retry_at = 0.0
        if not has_lines(self.db):
            add_lines(self.db)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One thread at a time, committed on success (sqlite3 runs in autocommit mode)."""
        with self.lock, immediate(self.db) as db:
            yield db

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
            message = self._spill.full_message(self._pending)
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
                self._spill.keep(self._pending)
                return 0
            return self._flush()

    def _flush(self) -> int:
        """Every pending write in one transaction; the last record's id (0 if none, or if the
        disk is full: then they stay pending, and spilled). The lock is held."""
        last = 0
        try:
            with immediate(self.db):
                for item in self._pending:
                    last = self._apply(item)
        except (OSError, sqlite3.Error) as exc:
            if not disk_full(exc, self.path):
                self._pending.pop()  # what the caller is told failed; earlier ones still wait
                raise
            self._retry_at = time.monotonic() + RETRY_S
            self._spill.keep(self._pending)
            return 0
        self._spill.taken(self._pending)
        self._pending.clear()
        return last

    def _apply(self, item: Pending) -> int:
        """One write in the open transaction; a record's id, else 0. Starting a run is
        idempotent and so is finishing it, so a write that waited can be replayed."""
        if isinstance(item, Record):
            cursor = self.db.execute(
                "INSERT INTO records (run_id, measurement, time_ns, tags, fields, line)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (item.run_id, *record_row(item), to_line(item)),
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

    def _keep_reserve(self) -> None:
        """Make the reserve file if it is missing and the disk has room to spare."""
        try:
            if self.reserve.exists():
                return
            if free_bytes(self.path.parent) < 16 * RESERVE_BYTES:
                return
            # Random bytes: a compressing file system would not keep zeros on disk.
            if not append(self.reserve, os.urandom(RESERVE_BYTES), fresh=True):
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
            with immediate(self.db):
                for op in [*starts, {**finish, "exit_code": code}]:
                    self._apply(op)
        except (OSError, sqlite3.Error) as exc:
            if not disk_full(exc, self.path):
                raise

    def import_spill(self, spill: Path) -> tuple[int, int]:
        """Read a spill file back into the store: (records added, records already there).
        Importing one twice adds nothing the second time."""
        items = read_spill(spill)
        added = present = 0
        try:
            with self.transaction() as db:
                for item in items:
                    if isinstance(item, Record):
                        found = db.execute(
                            "SELECT 1 FROM records WHERE measurement = ? AND time_ns = ?"
                            " AND tags = ? AND fields = ?",
                            record_row(item),
                        ).fetchone()
                        if found:
                            present += 1
                            continue
                        added += 1
                    self._apply(item)
        except (OSError, sqlite3.Error) as exc:
            if not disk_full(exc, self.path):
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
            if not disk_full(exc, self.path):
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
