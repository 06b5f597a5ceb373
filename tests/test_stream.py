"""Results stream to a real influxd while `fleet run` goes on: seen before the run ends, nothing
lost through an outage, nothing sent twice, and a server that hangs never holds the run up."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from servers import InfluxServer

from fleet.config import InfluxConfig, load_config
from fleet.errors import ConfigError
from fleet.results.record import make_record
from fleet.results.spool import Spool
from fleet.results.store import Store
from fleet.results.stream import streaming

ROOT = Path(__file__).resolve().parents[1]
CASE_S = 2  # each case measures this long, so a run lasts several stream intervals
WAIT_S = 300  # far above a run of a few cases on a busy machine


def wait_for(
    condition: Callable[[], object], what: str, run: Run, timeout_s: float = WAIT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert run.process.poll() is None, f"the run ended before {what}:\n{run.err()}"
        assert time.monotonic() < deadline, f"waited {timeout_s} s for {what}"
        time.sleep(0.1)


def stored(store: Path, measurement: str | None = None, table: str = "records") -> int:
    """Rows in the run's store, read while `fleet run` writes it (WAL: readers never block)."""
    if not store.exists():
        return 0
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        query, params = f"SELECT COUNT(*) FROM {table}", ()
        if measurement is not None:
            query, params = query + " WHERE measurement = ?", (measurement,)
        return int(db.execute(query, params).fetchone()[0])
    except sqlite3.OperationalError:  # no table yet
        return 0
    finally:
        db.close()


class Run:
    """`fleet run` of a suite of `cases` cases on `local`, sending to `server` as it goes."""

    def __init__(self, tmp_path: Path, server: InfluxServer, cases: int) -> None:
        models = "\n".join(
            f"  - {{name: m{i}, path: {ROOT / 'zoo' / 'digits_mlp.onnx'}}}" for i in range(cases)
        )
        suite = tmp_path / "streamed.yaml"
        suite.write_text(
            "name: streamed\n"
            f"measure: {{min_seconds: {CASE_S}, max_seconds: {CASE_S}, repetitions: 1,"
            " warmup_iterations: 1, min_iterations: 1}\n"
            f"models:\n{models}\n"
        )
        config = tmp_path / "fleet.toml"
        config.write_text(
            f'[influx]\nurl = "{server.url}"\nstream_interval_s = 0.3\nretry_total_s = 120\n'
        )
        self.store = tmp_path / "results.sqlite"
        self.stderr = tmp_path / "stderr.txt"
        env = {**os.environ, "FLEET_HOME": str(tmp_path / "home")}
        env.pop("FLEET_INFLUX_URL", None)
        argv = [sys.executable, "-m", "fleet", "run", str(suite), "--store", str(self.store)]
        with self.stderr.open("w") as err:
            self.process = subprocess.Popen(
                [*argv, "--config", str(config)], env=env, stdout=subprocess.DEVNULL, stderr=err
            )

    def err(self) -> str:
        return self.stderr.read_text()

    def finish(self) -> str:
        try:
            self.process.wait(timeout=WAIT_S)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        err = self.err()
        assert self.process.returncode == 0, err
        return err


def check_complete(server: InfluxServer, run: Run, err: str) -> None:
    """Every stored record is in InfluxDB, and the run's pushes sent each exactly once."""
    total = stored(run.store)
    assert f"InfluxDB: {total} sent, 0 rejected, 0 spooled" in err, err
    db = sqlite3.connect(run.store)
    try:
        kinds = dict(db.execute("SELECT measurement, COUNT(*) FROM records GROUP BY 1"))
    finally:
        db.close()
    # result, device and run; retry too when another test's run held `local` for a while.
    assert kinds["result"] >= 3 and kinds["run"] == 1
    for measurement, count in kinds.items():
        assert len(server.points(measurement)) == count, measurement


def test_results_reach_influxdb_while_the_run_goes_on(
    influxdb_server: InfluxServer, tmp_path: Path
) -> None:
    run = Run(tmp_path, influxdb_server, cases=3)
    try:
        wait_for(lambda: influxdb_server.points("result"), "the first result in InfluxDB", run)
        # The first result is in InfluxDB, and the run has not even stored its summary yet.
        assert stored(run.store, "run") == 0
        assert stored(run.store, "result") < 3
        first = influxdb_server.points("result")[0]
        assert (first["suite"], first["device"], first["status"]) == ("streamed", "local", "ok")
        assert first["latency_ms_p50"] > 0
    finally:
        err = run.finish()
    check_complete(influxdb_server, run, err)
    assert "streaming paused" not in err


def test_an_outage_mid_run_loses_nothing(influxdb_server: InfluxServer, tmp_path: Path) -> None:
    run = Run(tmp_path, influxdb_server, cases=5)
    try:
        wait_for(lambda: influxdb_server.points("result"), "the first result in InfluxDB", run)
        influxdb_server.stop()
        before = stored(run.store, "result")
        wait_for(lambda: stored(run.store, "result") > before, "a result stored while down", run)
        wait_for(lambda: "streaming paused" in run.err(), "the sender to notice the outage", run)
        assert stored(run.store, "run") == 0, "the run ended before the outage was over"
        influxdb_server.start()  # same data folder: what was sent before is still there
    finally:
        err = run.finish()
    check_complete(influxdb_server, run, err)
    assert err.count("streaming paused") == 1, err  # said once, not at every try


def test_what_an_outage_held_back_goes_with_the_end_of_the_run(
    influxdb_server: InfluxServer, tmp_path: Path
) -> None:
    run = Run(tmp_path, influxdb_server, cases=3)
    try:
        wait_for(lambda: influxdb_server.points("result"), "the first result in InfluxDB", run)
        influxdb_server.stop()
        # Down until the run is over and the thread has stopped (the CLI keeps the run's rerun
        # spec right after): only the push after the run, retrying meanwhile, is left to send.
        wait_for(lambda: stored(run.store, table="run_specs"), "the end of the run", run)
        influxdb_server.start()
    finally:
        err = run.finish()
    check_complete(influxdb_server, run, err)
    assert "streaming resumed" not in err  # the push after the run sent the rest
    sent = re.search(r"InfluxDB: (\d+) sent", err)
    assert sent and int(sent[1]) == stored(run.store)


def test_a_hung_server_never_holds_the_run_up(tmp_path: Path) -> None:
    """A server that takes connections and never answers: every write waits its timeout in
    the sender thread while the run's own writes to the store go straight through."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)  # never accepted: the kernel completes the handshakes, nobody answers
        url = f"http://127.0.0.1:{hole.getsockname()[1]}"
        config = InfluxConfig(url=url, timeout_s=2.0, retry_total_s=0.5, stream_interval_s=0.1)
        store = Store(tmp_path / "results.sqlite")
        slowest = 0.0
        with streaming(store, config) as stream:
            for i in range(40):
                started = time.monotonic()
                store.add(make_record("result", {"device": "d"}, {"run_id": "r", "n": float(i)}))
                slowest = max(slowest, time.monotonic() - started)
                time.sleep(0.1)
            assert stream.failure, "the sender should have met the hung server by now"
        assert slowest < 1.0  # far below the 2 s a write to the hung server takes
        report = stream.push_rest()
        assert report is not None
        assert (report.sent, report.pending) == (0, 40)
        assert report.errors and url in report.errors[0]
        assert Spool(store, config.sink).count_pending() == 40  # nothing lost


def test_the_stream_interval_is_a_setting(tmp_path: Path) -> None:
    toml = tmp_path / "fleet.toml"
    toml.write_text('[influx]\nurl = "http://localhost:8086"\n')
    influx = load_config(toml, env={}).require_influx()
    assert influx.stream_interval_s == 3.0
    toml.write_text('[influx]\nurl = "http://localhost:8086"\nstream_interval_s = 0.5\n')
    assert load_config(toml, env={}).require_influx().stream_interval_s == 0.5
    toml.write_text('[influx]\nurl = "http://localhost:8086"\nstream_interval_s = 0\n')
    with pytest.raises(ConfigError, match=r"fleet.toml:3: influx.stream_interval_s must be"):
        load_config(toml, env={})


def test_without_influxdb_streaming_does_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "results.sqlite")
    with streaming(store, None) as stream:
        store.add(make_record("result", {"device": "d"}, {"run_id": "r", "n": 1.0}))
    assert stream.push_rest() is None
