"""The local SQLite store: every result is written here first, so nothing is lost."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fleet.errors import ConfigError
from fleet.results.lineprotocol import to_line
from fleet.results.record import Record

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
"""


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    suite: str
    devices: list[str]
    started_ns: int
    finished_ns: int | None
    exit_code: int | None
    results: int


class Store:
    """A results database in one file; safe to share between the runner's threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA busy_timeout=10000")
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"{path}: cannot open the results store ({exc})") from exc
        self.lock = threading.Lock()
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
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def start_run(self, run_id: str, suite: str, devices: Sequence[str]) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO runs (run_id, suite, devices, started_ns) VALUES (?, ?, ?, ?)",
                (run_id, suite, json.dumps(list(devices)), time.time_ns()),
            )

    def finish_run(self, run_id: str, exit_code: int) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished_ns = ?, exit_code = ? WHERE run_id = ?",
                (time.time_ns(), exit_code, run_id),
            )

    def add(self, record: Record) -> int:
        """Store one record durably (committed before this returns); returns its id.

        Its line of line protocol is stored with it, so that no push has to encode it."""
        line = to_line(record)
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO records (run_id, measurement, time_ns, tags, fields, line)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.run_id,
                    record.measurement,
                    record.time_ns,
                    json.dumps(dict(record.tags), sort_keys=True),
                    json.dumps(dict(record.fields), sort_keys=True),
                    line,
                ),
            )
            return int(cursor.lastrowid or 0)

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


def row_to_record(row: tuple[str, int, str, str]) -> Record:
    measurement, time_ns, tags, fields = row
    return Record(measurement, json.loads(tags), json.loads(fields), time_ns)
