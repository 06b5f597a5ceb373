"""The spool: per sink, what was sent, what was refused, what is still waiting; in the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fleet.results.record import make_record
from fleet.results.spool import Rejected, Spool
from fleet.results.store import Store


def store_with(tmp_path: Path, n: int) -> Store:
    store = Store(tmp_path / "results.sqlite")
    for i in range(n):
        store.add(make_record("result", {"device": f"d{i}"}, {"run_id": "r", "x": i}, i + 1))
    return store


def test_everything_is_pending_until_marked(tmp_path: Path) -> None:
    store = store_with(tmp_path, 5)
    spool = Spool(store, "influx-v1 http://a db=fleet rp=")
    rows = spool.pending(10)
    assert [record_id for record_id, _ in rows] == [1, 2, 3, 4, 5]
    assert rows[2][1].tags == {"device": "d2"}
    assert rows[2][1].fields == {"run_id": "r", "x": 2.0}
    assert spool.count_pending() == 5

    spool.mark_sent([1, 2])
    spool.set_aside(Rejected(4, "result", "bad line"))
    assert [record_id for record_id, _ in spool.pending(10)] == [3, 5]
    assert [record_id for record_id, _ in spool.pending(10, after=3)] == [5]
    assert [record_id for record_id, _ in spool.pending(1)] == [3]
    assert spool.count_pending() == 2
    assert spool.rejected() == [Rejected(4, "result", "bad line")]


def test_each_sink_has_its_own_state(tmp_path: Path) -> None:
    store = store_with(tmp_path, 3)
    one, other = (
        Spool(store, "influx-v1 http://a db=x rp="),
        Spool(store, "influx-v1 http://b db=x rp="),
    )
    one.mark_sent([1, 2, 3])
    assert one.count_pending() == 0
    assert other.count_pending() == 3


def test_state_lives_in_the_store_file_and_survives_reopening(tmp_path: Path) -> None:
    store = store_with(tmp_path, 3)
    Spool(store, "s").mark_sent([2])
    store.close()

    reopened = Store(tmp_path / "results.sqlite")
    reopened.add(make_record("result", {"device": "late"}, {"run_id": "r2"}, 9))
    assert [record_id for record_id, _ in Spool(reopened, "s").pending(10)] == [1, 3, 4]
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        assert db.execute("SELECT record_id, state FROM sent WHERE sink = 's'").fetchall() == [
            (2, "sent")
        ]


def test_marking_again_is_harmless(tmp_path: Path) -> None:
    store = store_with(tmp_path, 2)
    spool = Spool(store, "s")
    spool.mark_sent([1])
    spool.mark_sent([1, 2])
    assert spool.count_pending() == 0
