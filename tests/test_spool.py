"""The spool: per sink, what was sent, what was refused, what is still waiting; in the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fleet.results.record import Record, make_record
from fleet.results.spool import Pending, Rejected, Spool
from fleet.results.store import Store


def store_with(tmp_path: Path, n: int) -> Store:
    store = Store(tmp_path / "results.sqlite")
    for i in range(n):
        store.add(make_record("result", {"device": f"d{i}"}, {"run_id": "r", "x": i}, i + 1))
    return store


def encode(record: Record) -> str:
    return f"{record.tags['device']} x={record.fields['x']}"


def ids(spool: Spool, limit: int = 10, after: int = 0) -> list[int]:
    return [p.record_id for p in spool.pending(limit, encode, after)]


def test_everything_is_pending_until_settled(tmp_path: Path) -> None:
    store = store_with(tmp_path, 5)
    spool = Spool(store, "influx-v1 http://a db=fleet rp=")
    rows = spool.pending(10, encode)
    assert [p.record_id for p in rows] == [1, 2, 3, 4, 5]
    assert rows[2] == Pending(3, "result", "d2 x=2.0", kept=False)
    assert spool.count_pending() == 5

    spool.settle(rows[:2])
    spool.settle([], [Rejected(4, "result", "bad line")])
    assert ids(spool) == [3, 5]
    assert ids(spool, after=3) == [5]
    assert ids(spool, limit=1) == [3]
    assert spool.count_pending() == 2
    assert spool.rejected() == [Rejected(4, "result", "bad line")]


def test_a_batch_delivered_whole_moves_one_number_not_a_row_per_record(tmp_path: Path) -> None:
    store = store_with(tmp_path, 6)
    spool = Spool(store, "s")
    spool.settle([], [Rejected(2, "result", "bad line")])
    batch = spool.pending(3, encode)  # 1, 3, 4: the refused record 2 is skipped
    assert [p.record_id for p in batch] == [1, 3, 4]

    spool.settle(batch, span=(0, 4))

    assert spool.settled_through() == 4
    assert ids(spool) == [5, 6]
    with store.lock:
        rows = store.db.execute("SELECT record_id, state FROM sent").fetchall()
    assert rows == [(2, "rejected")]  # the reason is still there to show
    assert spool.rejected() == [Rejected(2, "result", "bad line")]


def test_a_batch_after_a_gap_gets_rows_not_the_number(tmp_path: Path) -> None:
    store = store_with(tmp_path, 6)
    spool = Spool(store, "s")
    later = spool.pending(2, encode, after=3)  # 4, 5: records 1-3 are not settled yet
    spool.settle(later, span=(3, 5))
    assert spool.settled_through() == 0
    assert ids(spool) == [1, 2, 3, 6]

    spool.settle(spool.pending(3, encode), span=(0, 3))
    assert spool.settled_through() == 3
    assert ids(spool) == [6]
    assert spool.count_pending() == 1


def test_kept_lines_are_read_instead_of_the_records_until_settled(tmp_path: Path) -> None:
    store = store_with(tmp_path, 3)
    spool = Spool(store, "s")
    spool.keep(spool.pending(10, encode))
    # The records' own columns are no longer needed: the kept lines are what is sent.
    with store.transaction() as db:
        db.execute("UPDATE records SET fields = 'not json'")
    kept = spool.pending(10, encode)
    assert kept == [Pending(i, "result", f"d{i - 1} x={i - 1}.0", kept=True) for i in (1, 2, 3)]

    spool.settle(kept[:1], span=(0, 1))
    spool.settle([], [Rejected(2, "result", "bad line")])
    with store.lock:
        left = store.db.execute("SELECT record_id FROM lines").fetchall()
    assert left == [(3,)]  # a line is dropped as soon as its record is settled


def test_each_sink_has_its_own_state(tmp_path: Path) -> None:
    store = store_with(tmp_path, 3)
    one, other = (
        Spool(store, "influx-v1 http://a db=x rp="),
        Spool(store, "influx-v1 http://b db=x rp="),
    )
    one.settle(one.pending(10, encode), span=(0, 3))
    assert one.count_pending() == 0
    assert other.count_pending() == 3


def test_state_lives_in_the_store_file_and_survives_reopening(tmp_path: Path) -> None:
    store = store_with(tmp_path, 3)
    spool = Spool(store, "s")
    spool.settle(spool.pending(1, encode), span=(0, 1))
    spool.settle(spool.pending(1, encode, after=2))  # record 3, out of order
    store.close()

    reopened = Store(tmp_path / "results.sqlite")
    reopened.add(make_record("result", {"device": "late"}, {"run_id": "r2", "x": 9}, 9))
    assert ids(Spool(reopened, "s")) == [2, 4]
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        assert db.execute("SELECT record_id, state FROM sent WHERE sink = 's'").fetchall() == [
            (3, "sent")
        ]
        assert db.execute("SELECT settled_through FROM sinks WHERE sink = 's'").fetchall() == [(1,)]


def test_settling_again_is_harmless(tmp_path: Path) -> None:
    store = store_with(tmp_path, 2)
    spool = Spool(store, "s")
    first = spool.pending(10, encode)
    spool.settle(first[:1])
    spool.settle(first)
    spool.settle(first, span=(0, 2))
    spool.settle(first[:1], span=(0, 1))  # an older batch settled late never moves it back
    assert spool.settled_through() == 2
    assert spool.count_pending() == 0
