"""The store's SQLite file: its tables, the upgrade of a store an older fleet wrote, the one
way to write in it (an immediate transaction) and a record as a row of the records table.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A transaction holding SQLite's write lock from its start, committed on success
    (sqlite3 runs in autocommit mode). The caller keeps other threads out."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        # SQLite has already rolled back a transaction that hit a full disk.
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def has_lines(db: sqlite3.Connection) -> bool:
    return any(row[1] == "line" for row in db.execute("PRAGMA table_info(records)"))


def add_lines(db: sqlite3.Connection) -> None:
    """Give a store written before records kept their line (fleet 0.1.0's first spool) one
    line per record, once, so that every record can be pushed like a new one."""
    with immediate(db):
        if has_lines(db):  # another process opened it first
            return
        db.execute("ALTER TABLE records ADD COLUMN line TEXT NOT NULL DEFAULT ''")
        rows = db.execute("SELECT id, measurement, time_ns, tags, fields FROM records")
        db.executemany(
            "UPDATE records SET line = ? WHERE id = ?",
            [(to_line(row_to_record(row[1:])), row[0]) for row in rows.fetchall()],
        )


def row_to_record(row: tuple[str, int, str, str]) -> Record:
    measurement, time_ns, tags, fields = row
    return Record(measurement, json.loads(tags), json.loads(fields), time_ns)


def record_row(record: Record) -> tuple[str, int, str, str]:
    """measurement, time_ns, tags and fields as the records table keeps them."""
    return (
        record.measurement,
        record.time_ns,
        json.dumps(dict(record.tags), sort_keys=True),
        json.dumps(dict(record.fields), sort_keys=True),
    )
