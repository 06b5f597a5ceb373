"""The spool: which stored records each sink has received, kept in the store's own SQLite file.

A record is pending for a sink until the sink accepted it ("sent") or refused it for good
("rejected", with the server's reason). Keeping this next to the records means a crash or an
outage loses nothing: whatever has no row here is sent by the next push.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fleet.results.record import Record
from fleet.results.store import Store, row_to_record

SCHEMA = """
CREATE TABLE IF NOT EXISTS sent (
    sink TEXT NOT NULL,
    record_id INTEGER NOT NULL REFERENCES records (id),
    state TEXT NOT NULL CHECK (state IN ('sent', 'rejected')),
    error TEXT,
    PRIMARY KEY (sink, record_id)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Rejected:
    """A record the server refused (HTTP 400); set aside, shown to the user, never retried."""

    record_id: int
    measurement: str
    reason: str


class Spool:
    """The sending state of every stored record for one sink (named by `InfluxConfig.sink`)."""

    def __init__(self, store: Store, sink: str) -> None:
        self.store = store
        self.sink = sink
        with store.lock:
            store.db.executescript(SCHEMA)

    def pending(self, limit: int, after: int = 0) -> list[tuple[int, Record]]:
        """Up to `limit` unsent records with ids above `after`, oldest first."""
        with self.store.lock:
            rows = self.store.db.execute(
                "SELECT r.id, r.measurement, r.time_ns, r.tags, r.fields FROM records r"
                " WHERE r.id > ? AND NOT EXISTS"
                " (SELECT 1 FROM sent s WHERE s.sink = ? AND s.record_id = r.id)"
                " ORDER BY r.id LIMIT ?",
                (after, self.sink, limit),
            ).fetchall()
        return [(row[0], row_to_record(row[1:])) for row in rows]

    def count_pending(self) -> int:
        with self.store.lock:
            row = self.store.db.execute(
                "SELECT COUNT(*) FROM records r WHERE NOT EXISTS"
                " (SELECT 1 FROM sent s WHERE s.sink = ? AND s.record_id = r.id)",
                (self.sink,),
            ).fetchone()
        return int(row[0])

    def mark_sent(self, record_ids: Sequence[int]) -> None:
        with self.store.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO sent (sink, record_id, state) VALUES (?, ?, 'sent')",
                [(self.sink, record_id) for record_id in record_ids],
            )

    def set_aside(self, rejected: Rejected) -> None:
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO sent (sink, record_id, state, error)"
                " VALUES (?, ?, 'rejected', ?)",
                (self.sink, rejected.record_id, rejected.reason),
            )

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
