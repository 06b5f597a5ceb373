"""End to end: lab runs with InfluxDB set, through an outage: nothing lost, nothing doubled."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from servers import InfluxServer

from fleet.cli import main
from fleet.cli.results import results
from fleet.results.store import Store

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "suites" / "smoke.yaml"

pytestmark = pytest.mark.slow


def lab_run(lab: Path, store: Path) -> None:
    args = ["run", str(SMOKE), "--inventory", str(lab / "inventory.yaml"), "--devices", "lab"]
    result = CliRunner().invoke(main, [*args, "--store", str(store)])
    assert result.exit_code in (0, 1), result.output  # 1: a budget may fail on a busy machine


def assert_same_points(server: InfluxServer, store: Store) -> None:
    """InfluxDB holds exactly the store's records: same count per measurement, none twice."""
    for measurement in ("result", "device"):
        stored = store.records(measurement=measurement)
        points = server.points(measurement)
        assert len(points) == len(stored), measurement
        keys = Counter((p["device"], p["time"]) for p in points)
        assert max(keys.values()) == 1, f"{measurement}: a point is there twice"
        assert set(keys) == {(r.tags["device"], r.time_ns // 10**6 * 10**6) for r in stored}


def test_outage_during_runs_loses_nothing_and_doubles_nothing(
    lab: Path,
    influxdb_server: InfluxServer,
    tmp_path: Path,
    fleet_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ./fleet.toml as a user would write it; a short retry budget keeps the outage quick.
    monkeypatch.chdir(tmp_path)
    Path("fleet.toml").write_text(f'[influx]\nurl = "{influxdb_server.url}"\nretry_total_s = 1\n')
    path = tmp_path / "results.sqlite"

    lab_run(lab, path)  # the run itself sends its results
    store = Store(path)
    assert len(store.records(measurement="result")) == 3
    assert_same_points(influxdb_server, store)

    influxdb_server.stop()
    lab_run(lab, path)  # InfluxDB is down: the results stay spooled in the store
    assert len(store.records(measurement="result")) == 6
    assert len(store.records()) > 6

    influxdb_server.start()
    assert len(influxdb_server.points("result")) == 3
    pushed = CliRunner().invoke(results, ["push", "--store", str(path)])
    assert pushed.exit_code == 0, pushed.output
    assert pushed.output.endswith(" rejected, 0 spooled\n")
    assert_same_points(influxdb_server, store)

    again = CliRunner().invoke(results, ["push", "--store", str(path)])
    assert again.output == "InfluxDB: 0 sent, 0 rejected, 0 spooled\n"
    assert_same_points(influxdb_server, store)
