"""The InfluxDB sink against a real influxd 1.x (v1 dialect): complete, typed, idempotent,
patient with a server that is down and clear about one that says no."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from servers import InfluxServer, free_port, running_influxdb

from fleet.config import InfluxConfig, Secret
from fleet.results.influx import push_pending
from fleet.results.lineprotocol import to_line
from fleet.results.record import TAG_KEYS, make_record
from fleet.results.spool import Spool
from fleet.results.store import Store


def config(server: InfluxServer, **overrides: Any) -> InfluxConfig:
    return replace(InfluxConfig(url=server.url, retry_total_s=2.0), **overrides)


def count(server: InfluxServer, measurement: str) -> int:
    return len(server.points(measurement))


@pytest.mark.parametrize("gzip", [True, False])
def test_every_record_lands_once_with_its_tags_and_fields(
    influxdb_server: InfluxServer, results_store: Store, gzip: bool
) -> None:
    report = push_pending(results_store, config(influxdb_server, gzip=gzip))

    stored = results_store.records()
    assert (report.sent, report.rejected, report.pending, report.errors) == (len(stored), [], 0, [])
    for measurement in ("result", "generation", "device", "run"):
        assert count(influxdb_server, measurement) == len(
            [r for r in stored if r.measurement == measurement]
        )
    timeout = [p for p in influxdb_server.points("result") if p["status"] == "timeout"]
    assert len(timeout) == 1
    assert timeout[0]["device"] == "pi5-a"
    assert timeout[0]["latency_ms_p50"] is None
    ok = next(r for r in stored if r.measurement == "result" and r.status == "ok")
    (point,) = [
        p
        for p in influxdb_server.points("result")
        if p["time"] == ok.time_ns // 10**6 * 10**6 and p["device"] == ok.tags["device"]
    ]
    assert point["latency_ms_p50"] == ok.fields["latency_ms_p50"]
    assert point["run_id"] == ok.run_id
    assert point["passed"] is ok.fields["passed"]


def test_schema_tags_are_dimensions_numbers_are_floats(
    influxdb_server: InfluxServer, results_store: Store
) -> None:
    push_pending(results_store, config(influxdb_server))

    answer = influxdb_server.query('SHOW TAG KEYS FROM "result"')
    tags = {row[0] for row in answer["results"][0]["series"][0]["values"]}
    # run_id and hashes are fields: no cardinality growth. `shape` is a tag only where the
    # suite chose a model's shapes, `provider_options` and `gpu` only where set: none here.
    assert tags == set(TAG_KEYS) - {"shape", "provider_options", "gpu"}
    answer = influxdb_server.query('SHOW FIELD KEYS FROM "result"')
    types = dict(answer["results"][0]["series"][0]["values"])
    assert types["run_id"] == types["model_sha256"] == types["status"] == "string"
    assert types["passed"] == types["valid"] == "boolean"
    numbers = {name for name, kind in types.items() if kind not in ("string", "boolean")}
    assert numbers >= {"latency_ms_p50", "iterations", "peak_rss_mb", "accuracy_drop_pp"}
    assert {types[name] for name in numbers} == {"float"}


def test_pushing_again_never_duplicates(
    influxdb_server: InfluxServer, results_store: Store
) -> None:
    cfg = config(influxdb_server)
    first = push_pending(results_store, cfg)
    again = push_pending(results_store, cfg)
    assert (again.sent, again.pending) == (0, 0)

    # Even if the spool forgot (a crash between the server's answer and the commit), the same
    # record is the same series and timestamp: InfluxDB overwrites, it does not add.
    with results_store.transaction() as db:
        db.execute("DELETE FROM sent")
        db.execute("DELETE FROM sinks")
    resent = push_pending(results_store, cfg)
    assert resent.sent == first.sent
    assert count(influxdb_server, "result") == len(results_store.records(measurement="result"))


def test_rejected_line_is_set_aside_with_the_reason(
    influxdb_server: InfluxServer, tmp_path: Path
) -> None:
    store = Store(tmp_path / "r.sqlite")
    now = time.time_ns()
    for i in range(7):
        # A field that changes type is refused by InfluxDB for that one line (HTTP 400).
        value: object = "fast" if i == 4 else 1.0 + i
        store.add(
            make_record("result", {"device": "d"}, {"latency_ms_p50": value}, now + i * 10**6)
        )
    store.add(make_record("result", {"device": "d"}, {"latency_ms_p50": float("nan")}, now))

    report = push_pending(store, config(influxdb_server, batch_size=100))

    assert report.sent == 6
    assert report.pending == 0
    assert sorted(r.record_id for r in report.rejected) == [5, 8]
    reasons = {r.record_id: r.reason for r in report.rejected}
    assert "field type conflict" in reasons[5]
    assert "no field with a finite value" in reasons[8]
    assert any("rejected record 5 (result): partial write" in line for line in report.lines())
    assert count(influxdb_server, "result") == 6
    # Set aside for good: the next push neither retries nor reports them again.
    again = push_pending(store, config(influxdb_server))
    assert (again.sent, again.rejected, again.pending) == (0, [], 0)
    assert [r.record_id for r in Spool(store, config(influxdb_server).sink).rejected()] == [5, 8]


def test_server_down_keeps_everything_spooled_then_push_sends_it(
    influxdb_server: InfluxServer, results_store: Store
) -> None:
    cfg = config(influxdb_server, retry_total_s=0.5, batch_size=5)
    influxdb_server.stop()

    started = time.monotonic()
    report = push_pending(results_store, cfg)  # must not raise

    # The retry budget bounds the wait (0.5 s here; a busy machine adds to it, not tenfold).
    assert time.monotonic() - started < 30
    total = len(results_store.records())
    assert (report.sent, report.pending) == (0, total)
    (error,) = report.errors
    assert f"InfluxDB at {influxdb_server.url} unreachable" in error
    assert "fleet results push" in error

    influxdb_server.start()
    report = push_pending(results_store, cfg)
    assert (report.sent, report.pending, report.errors) == (total, 0, [])
    assert count(influxdb_server, "result") == len(results_store.records(measurement="result"))


def test_server_back_during_backoff_gets_everything_in_one_push(
    influxdb_server: InfluxServer, results_store: Store
) -> None:
    influxdb_server.stop()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            influxdb_server.start()

    report = push_pending(results_store, config(influxdb_server, retry_total_s=60), sleep=sleep)

    assert (report.sent, report.pending, report.errors) == (len(results_store.records()), 0, [])
    assert len(waits) == 3
    assert waits[0] < waits[2]  # the delay grows between tries


def test_a_push_that_stops_leaves_everything_for_the_next_which_only_sends_lines(
    influxdb_server: InfluxServer, results_store: Store
) -> None:
    cfg = config(influxdb_server, database="nightly", batch_size=5)
    total = len(results_store.records())
    results = len(results_store.records(measurement="result"))
    failed = push_pending(results_store, cfg)  # no such database yet: HTTP 404, stop
    assert (failed.sent, failed.pending) == (0, total)

    # The next push sends the lines stored with the records: it never reads their JSON.
    with results_store.transaction() as db:
        db.execute("UPDATE records SET fields = 'not json'")
    influxdb_server.create_database("nightly")
    report = push_pending(results_store, cfg)

    assert (report.sent, report.pending, report.errors) == (total, 0, [])
    points = influxdb_server.points("result", db="nightly")
    assert len(points) == results
    assert {p["run_id"] for p in points} == {"20261120T020000Z-000000", "20261121T020000Z-000001"}


def test_missing_database_is_an_error_that_says_how_to_fix_it(
    influxdb_server: InfluxServer, results_store: Store
) -> None:
    report = push_pending(results_store, config(influxdb_server, database="nightly"))
    assert report.sent == 0
    assert report.pending == len(results_store.records())
    (error,) = report.errors
    assert "HTTP 404" in error
    assert 'CREATE DATABASE "nightly"' in error


def test_nothing_listening_is_reported_not_raised(results_store: Store) -> None:
    cfg = InfluxConfig(url=f"http://127.0.0.1:{free_port()}", retry_total_s=0.2)
    report = push_pending(results_store, cfg)
    assert report.pending == len(results_store.records())
    assert "Connection refused" in report.errors[0]


@pytest.fixture
def secured_influxdb(tmp_path: Path) -> Iterator[InfluxServer]:
    with running_influxdb(tmp_path / "influxd", auth=True) as server:
        yield server


def test_credentials_are_sent_and_never_shown(
    secured_influxdb: InfluxServer, results_store: Store
) -> None:
    wrong = config(secured_influxdb, user="admin", password=Secret("not-the-password"))
    report = push_pending(results_store, wrong)
    assert report.sent == 0
    assert "HTTP 401" in report.errors[0]
    assert "FLEET_INFLUX_PASSWORD" in report.errors[0]
    assert "not-the-password" not in " ".join(report.lines())

    right = config(
        secured_influxdb, user=InfluxServer.ADMIN, password=Secret(InfluxServer.ADMIN_PASSWORD)
    )
    assert push_pending(results_store, right).pending == 0
    assert count(secured_influxdb, "run") == 2


def test_line_protocol_escapes_what_people_type() -> None:
    record = make_record(
        "result",
        {"device": "bench rig,2", "model": "m=1"},
        {"message": 'said "no"\nthen \\ stopped', "latency_ms_p50": 2, "passed": False},
        1_700_000_000_123_456_789,
    )
    assert to_line(record) == (
        r"result,device=bench\ rig\,2,model=m\=1"
        r' latency_ms_p50=2,message="said \"no\"' + "\n" + r'then \\ stopped",passed=false'
        " 1700000000123"
    )


def test_a_name_is_a_tag_or_a_field_never_both() -> None:
    record = make_record(
        "generation", {"device": "d", "context_tokens": 32}, {"context_tokens": 32, "ttft_ms": 4}
    )
    assert to_line(record).startswith("generation,context_tokens=32,device=d ttft_ms=4 ")
