"""The spool: which stored records each sink has received, kept in the store's own SQLite file.

A record is pending for a sink until the sink accepted it ("sent") or refused it for good
("rejected", with the server's reason). Keeping this next to the records means a crash or an
outage loses nothing: whatever is not settled here is sent by the next push.

Records only ever get new, larger ids, and a push sends them in id order, so most of the state
is one number per sink (`sinks.settled_through`: every record up to that id is settled); a
row in `sent` is kept only for what that number cannot say: a refused record and its reason,
or a record sent out of order (the rest of its batch could not be sent). What is sent is the
line the store keeps with each record (`records.line`), so a push reads ready strings and
writes one number per batch.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from fleet.results.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS sent (
    sink TEXT NOT NULL,
    record_id INTEGER NOT NULL REFERENCES records (id),
    state TEXT NOT NULL CHECK (state IN ('sent', 'rejected')),
    error TEXT,
    PRIMARY KEY (sink, record_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sinks (
    sink TEXT PRIMARY KEY,
    settled_through INTEGER NOT NULL
) WITHOUT ROWID;
-- The first spool kept lines apart until they were sent; records keep their own now.
DROP TABLE IF EXISTS lines;
"""

# One query per batch: the pending records after an id, oldest first.
_PENDING = """
SELECT r.id, r.measurement, r.line FROM records r
WHERE r.id > ? AND NOT EXISTS (SELECT 1 FROM sent s WHERE s.sink = ? AND s.record_id = r.id)
ORDER BY r.id LIMIT ?
"""


@dataclass(frozen=True)
class Rejected:
    """A record the server refused (HTTP 400); set aside, shown to the user, never retried."""

    record_id: int
    measurement: str
    reason: str


class Pending(NamedTuple):  # a tuple: a push makes one per point
    """A record waiting for a sink, as a line of line protocol (empty: nothing to write)."""

    record_id: int
    measurement: str
    line: str


class Spool:
    """The sending state of every stored record for one sink (named by `InfluxConfig.sink`)."""

    def __init__(self, store: Store, sink: str) -> None:
        self.store = store
        self.sink = sink
        with store.lock:
            store.db.executescript(SCHEMA)

    def settled_through(self) -> int:
        """Every record up to this id is settled for this sink; where pending ones start."""
        with self.store.lock:
            return self._settled_through(self.store.db)

    def _settled_through(self, db: sqlite3.Connection) -> int:
        row = db.execute("SELECT settled_through FROM sinks WHERE sink = ?", (self.sink,))
        found = row.fetchone()
        return int(found[0]) if found else 0

    def pending(self, limit: int, after: int = 0) -> list[Pending]:
        """Up to `limit` unsettled records with ids above `after`, oldest first."""
        after = max(after, self.settled_through())
        with self.store.lock:
            rows = self.store.db.execute(_PENDING, (after, self.sink, limit)).fetchall()
        return list(map(Pending._make, rows))

    def settle(
        self,
        sent: Sequence[Pending],
        rejected: Sequence[Rejected] = (),
        span: tuple[int, int] | None = None,
    ) -> None:
        """Mark records sent, or set aside with the server's reason, in one transaction.

        `span` = (after, last) says that `pending(..., after)` returned a batch ending at
        `last` and all of it is now sent or rejected: then every record up to `last` is settled
        as soon as every record up to `after` is, and no row per sent record is needed.
        """
        with self.store.transaction() as db:
            if span is not None and self._settled_through(db) >= span[0]:
                db.execute(
                    "INSERT INTO sinks (sink, settled_through) VALUES (?, ?)"
                    " ON CONFLICT (sink) DO UPDATE"
                    " SET settled_through = max(settled_through, excluded.settled_through)",
                    (self.sink, span[1]),
                )
            else:
                db.executemany(
                    "INSERT OR REPLACE INTO sent (sink, record_id, state) VALUES (?, ?, 'sent')",
                    [(self.sink, p.record_id) for p in sent],
                )
            db.executemany(
                "INSERT OR REPLACE INTO sent (sink, record_id, state, error)"
                " VALUES (?, ?, 'rejected', ?)",
                [(self.sink, r.record_id, r.reason) for r in rejected],
            )

    def count_pending(self) -> int:
        with self.store.lock:
            after = self._settled_through(self.store.db)
            row = self.store.db.execute(
                "SELECT COUNT(*) FROM records r WHERE r.id > ? AND NOT EXISTS"
                " (SELECT 1 FROM sent s WHERE s.sink = ? AND s.record_id = r.id)",
                (after, self.sink),
            ).fetchone()
        return int(row[0])

    def rejected(self) -> list[Rejected]:
        """Everything this sink refused so far, with the server's reasons."""
        with self.store.lock:
            rows = self.store.db.execute(
                "SELECT s.record_id, r.measurement, s.error FROM sent s"
                " JOIN records r ON r.id = s.record_id"
                " WHERE s.sink = ? AND s.state = 'rejected' ORDER BY s.record_id",
                (self.sink,),
            ).fetchall()
        return [Rejected(row[0], row[1], row[2]) for row in rows]
