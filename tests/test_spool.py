"""The spool: per sink, what was sent, what was refused, what is still waiting; in the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fleet.results.lineprotocol import to_line
from fleet.results.record import make_record
from fleet.results.spool import Pending, Rejected, Spool
from fleet.results.store import Store
from fleet.results.store_db import add_lines


def store_with(tmp_path: Path, n: int) -> Store:
    store = Store(tmp_path / "results.sqlite")
    for i in range(n):
        store.add(make_record("result", {"device": f"d{i}"}, {"run_id": "r", "x": i}, i + 1))
    return store


def ids(spool: Spool, limit: int = 10, after: int = 0) -> list[int]:
    return [p.record_id for p in spool.pending(limit, after)]


def test_everything_is_pending_until_settled(tmp_path: Path) -> None:
    store = store_with(tmp_path, 5)
    spool = Spool(store, "influx-v1 http://a db=fleet rp=")
    rows = spool.pending(10)
    assert [p.record_id for p in rows] == [1, 2, 3, 4, 5]
    assert rows[2] == Pending(3, "result", 'result,device=d2 run_id="r",x=2 0')
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
    batch = spool.pending(3)  # 1, 3, 4: the refused record 2 is skipped
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
    later = spool.pending(2, after=3)  # 4, 5: records 1-3 are not settled yet
    spool.settle(later, span=(3, 5))
    assert spool.settled_through() == 0
    assert ids(spool) == [1, 2, 3, 6]

    spool.settle(spool.pending(3), span=(0, 3))
    assert spool.settled_through() == 3
    assert ids(spool) == [6]
    assert spool.count_pending() == 1


def test_lines_are_encoded_when_stored_so_a_push_reads_only_them(tmp_path: Path) -> None:
    store = store_with(tmp_path, 3)
    expected = [to_line(record) for record in store.records()]
    # The records' JSON columns are not what is sent: the line stored with each record is.
    with store.transaction() as db:
        db.execute("UPDATE records SET fields = 'not json'")
    assert [p.line for p in Spool(store, "s").pending(10)] == expected


def test_a_store_from_before_lines_gets_a_line_per_record_once(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    with sqlite3.connect(path) as db:  # the records table of fleet 0.1.0's first spool
        db.executescript(
            "CREATE TABLE records (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,"
            " measurement TEXT NOT NULL, time_ns INTEGER NOT NULL, tags TEXT NOT NULL,"
            " fields TEXT NOT NULL);"
            "CREATE TABLE lines (record_id INTEGER PRIMARY KEY, line TEXT NOT NULL);"
            "INSERT INTO records (run_id, measurement, time_ns, tags, fields) VALUES"
            """ ('r', 'result', 5000000, '{"device": "pi"}', '{"x": 1.5}'),"""
            """ ('r', 'result', 6000000, '{"device": "pi"}', '{"run_id": "r"}');"""
        )
    store = Store(path)
    add_lines(store.db)  # as a second process that saw the old table would: harmless
    spool = Spool(store, "s")
    assert spool.pending(10) == [
        Pending(1, "result", "result,device=pi x=1.5 5"),
        Pending(2, "result", 'result,device=pi run_id="r" 6'),
    ]
    store.add(make_record("result", {"device": "pi"}, {"x": 2.0}, 7_000_000))
    assert [p.line for p in spool.pending(10, after=2)] == ["result,device=pi x=2 7"]
    with store.lock:
        tables = {row[0] for row in store.db.execute("SELECT name FROM sqlite_master")}
    assert "lines" not in tables


def test_each_sink_has_its_own_state(tmp_path: Path) -> None:
    store = store_with(tmp_path, 3)
    one, other = (
        Spool(store, "influx-v1 http://a db=x rp="),
        Spool(store, "influx-v1 http://b db=x rp="),
    )
    one.settle(one.pending(10), span=(0, 3))
    assert one.count_pending() == 0
    assert other.count_pending() == 3


def test_state_lives_in_the_store_file_and_survives_reopening(tmp_path: Path) -> None:
    store = store_with(tmp_path, 3)
    spool = Spool(store, "s")
    spool.settle(spool.pending(1), span=(0, 1))
    spool.settle(spool.pending(1, after=2))  # record 3, out of order
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
    first = spool.pending(10)
    spool.settle(first[:1])
    spool.settle(first)
    spool.settle(first, span=(0, 2))
    spool.settle(first[:1], span=(0, 1))  # an older batch settled late never moves it back
    assert spool.settled_through() == 2
    assert spool.count_pending() == 0
