"""The Grafana dashboards, proven without Grafana: every panel, annotation and variable query
runs against a real influxd holding fleet's results, the way Grafana would send it."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from servers import InfluxServer, fill_store

from fleet.cli import main
from fleet.cli.results import results
from fleet.config import InfluxConfig
from fleet.regressions.check import check_run
from fleet.results.influx import push_pending
from fleet.results.record import make_record
from fleet.results.store import Store
from fleet.suite import Regressions

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCE_UID = "fleet-influxdb"
VARIABLES = ("suite", "device", "model", "precision", "variant")


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels inside a collapsed row


def queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(where, InfluxQL) for every panel target and every InfluxDB annotation."""
    found = [
        (f"panel {p['title']!r} {t['refId']}", t["query"])
        for p in panels(dashboard)
        for t in p.get("targets", [])
    ]
    found += [
        (f"annotation {a['name']!r}", a["query"])
        for a in dashboard["annotations"]["list"]
        if a["datasource"].get("uid") == DATASOURCE_UID
    ]
    return found


def regex_escape(value: str) -> str:
    """What Grafana's InfluxDB data source does to a variable's value inside /regex/."""
    return re.sub(r"([\\^$*+?.()|\[\]{}/])", r"\\\1", value)


def interpolate(query: str, chosen: Mapping[str, Sequence[str] | None]) -> str:
    """Grafana's substitutions: time range, interval, and variables (None means All)."""
    now_ms = time.time_ns() // 10**6
    query = query.replace(
        "$timeFilter", f"time >= {now_ms - 30 * 86_400_000}ms and time <= {now_ms + 60_000}ms"
    )
    query = query.replace("$__interval", "1h")
    for name, values in chosen.items():
        if values is None:
            text = ".*"  # the variables' allValue
        elif len(values) == 1:
            text = regex_escape(values[0])
        else:
            text = "(" + "|".join(regex_escape(v) for v in values) + ")"
        pattern = rf"\$\{{{name}\}}|\[\[{name}\]\]|\${name}\b"
        query = re.sub(pattern, text.replace("\\", "\\\\"), query)
    assert not re.search(r"\$[A-Za-z_{]|\[\[", query), f"not substituted: {query}"
    return query


def check_dashboards(server: InfluxServer, empty_ok: Sequence[str] = ()) -> int:
    """Run every query three ways: variables on All, on their first value, on all values.

    Returns how many queries ran; fails on a non-200 answer, an error or an empty result
    (but for queries of the measurements in `empty_ok`: a lab run need not regress).
    """
    ran = 0
    for path in DASHBOARDS:
        dashboard = load(path)
        for mode in ("all", "first", "every"):
            chosen: dict[str, Sequence[str] | None] = {}
            for variable in dashboard["templating"]["list"]:
                where = f"{path.name} variable {variable['name']} ({mode})"
                answer = server.query(interpolate(variable["query"], chosen))
                (result,) = answer["results"]
                assert "error" not in result, f"{where}: {result}"
                options = [row[1] for s in result.get("series", []) for row in s["values"]]
                assert options, f"{where}: no values"
                picks = {"all": None, "first": options[:1], "every": options}
                chosen[variable["name"]] = picks[mode]
                ran += 1
            for where, query in queries(dashboard):
                answer = server.query(interpolate(query, chosen))
                may_be_empty = any(f'FROM "{m}"' in query for m in empty_ok)
                for result in answer["results"]:
                    assert "error" not in result, f"{path.name} {where} ({mode}): {result}"
                    if not may_be_empty:
                        assert result.get("series"), f"{path.name} {where} ({mode}): no series"
                ran += 1
    return ran


def test_dashboard_files_are_wired_to_the_provisioned_data_source() -> None:
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/fleet-influxdb.yaml").read_text())
    (source,) = sources["datasources"]
    assert source["uid"] == DATASOURCE_UID
    assert source["type"] == "influxdb"
    assert source["jsonData"]["version"] == "InfluxQL"
    assert len(DASHBOARDS) >= 2
    uids = set()
    for path in DASHBOARDS:
        dashboard = load(path)
        uids.add(dashboard["uid"])
        ids = [p["id"] for p in panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        for panel in panels(dashboard):
            assert panel["datasource"]["uid"] == DATASOURCE_UID, path.name
            for target in panel["targets"]:
                assert target["rawQuery"] is True
                assert target["datasource"]["uid"] == DATASOURCE_UID
        for variable in dashboard["templating"]["list"]:
            assert variable["datasource"]["uid"] == DATASOURCE_UID
            assert variable["multi"] and variable["includeAll"], variable["name"]
        names = {v["name"] for v in dashboard["templating"]["list"]}
        assert names == set(VARIABLES)
        for where, query in queries(dashboard):
            assert "from(bucket" not in query, f"{path.name} {where}: Flux is not InfluxQL"
            if any(f'FROM "{m}"' in query for m in ("result", "generation", "regression")):
                # The accuracy drop is about the other variants, whatever $precision and
                # $variant say.
                filters = ["suite", "device", "model"]
                filters += [] if "\"precision\" != 'fp32'" in query else ["precision", "variant"]
                for name in filters:
                    assert f'"{name}" =~ /^${name}$/' in query, f"{path.name} {where}: ${name}?"
    assert len(uids) == len(DASHBOARDS)


def test_provisioning_and_compose_agree_on_paths() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/fleet.yaml").read_text())
    (entry,) = provider["providers"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    volumes = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{entry['options']['path']}:ro" in volumes
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in volumes
    environment = compose["services"]["grafana"]["environment"]
    assert environment["FLEET_GRAFANA_INFLUX_URL"] == "http://influxdb:8086"


@pytest.fixture
def results_store(tmp_path: Path) -> Store:
    """fill_store's two nights, and regression records the check makes of them, so that the
    regression annotations and table have data: the second night against the first pinned
    (every latency went up: regressions), then the first against the second pinned
    (improvements)."""
    store = Store(tmp_path / "results.sqlite")
    fill_store(store)
    first, second = (run.run_id for run in store.runs())
    rules = Regressions(latency_pct=0.1)
    store.pin(first)
    assert check_run(store, second, rules, gate=True).regressions
    store.pin(second)
    assert check_run(store, first, rules).improvements
    store.unpin("smoke")
    return store


def test_every_query_answers_with_data(influxdb_server: InfluxServer, results_store: Store) -> None:
    assert push_pending(results_store, InfluxConfig(url=influxdb_server.url)).pending == 0
    every = [load(path) for path in DASHBOARDS]
    expected = sum(len(d["templating"]["list"]) + len(queries(d)) for d in every)
    assert check_dashboards(influxdb_server) == 3 * expected  # three ways each


def panel(dashboard: str, field: str) -> str:
    """The query of the bar panel that shows `field` on that dashboard."""
    (query,) = [
        target["query"]
        for p in panels(load(GRAFANA / "dashboards" / dashboard))
        if p["type"] == "bargauge"
        for target in p["targets"]
        if f'last("{field}")' in target["query"]
    ]
    return query


def test_regressions_table_shows_each_flagged_change(
    influxdb_server: InfluxServer, results_store: Store
) -> None:
    push_pending(results_store, InfluxConfig(url=influxdb_server.url))
    (query,) = [
        target["query"]
        for p in panels(load(GRAFANA / "dashboards" / "fleet-trends.json"))
        if p["type"] == "table"
        for target in p["targets"]
    ]
    (result,) = influxdb_server.query(interpolate(query, dict.fromkeys(VARIABLES)))["results"]
    keys = ("device", "model", "precision", "context_tokens", "metric")
    shown = sorted(
        (
            *(s["tags"][k] for k in keys),
            row[s["columns"].index("run_id")],
            row[s["columns"].index("direction")],
        )
        for s in result["series"]
        for row in s["values"]
    )
    stored = sorted(
        (*(r.tags.get(k, "") for k in keys), r.run_id, r.fields["direction"])
        for r in results_store.records(measurement="regression")
    )
    assert {row[-1] for row in stored} == {"regression", "improvement"}
    assert shown == stored  # every flagged change, once


def test_two_int8_modes_are_two_series_in_every_result_panel(
    influxdb_server: InfluxServer, tmp_path: Path
) -> None:
    """Issue 13: int8-static and int8-dynamic share format and precision. Grouped by those
    alone they were one series, the later result hiding the other; each is its own."""
    store = Store(tmp_path / "modes.sqlite")
    run_id = "20261201T020000Z-0000aa"
    store.start_run(run_id, "modes", ["lab1"])
    tags = {
        "suite": "modes", "device": "lab1", "device_class": "lab", "arch": "x86_64",
        "os": "linux", "model": "encoder", "format": "onnx", "precision": "int8",
        "runtime": "onnxruntime", "provider": "cpu", "batch": "1", "threads": "1",
    }  # fmt: skip
    figures = {"onnx:int8-static": 52.0, "onnx:int8-dynamic": 262.0}
    for offset, (variant, p50) in enumerate(figures.items()):
        fields = {
            "run_id": run_id, "status": "ok", "latency_ms_p50": p50, "latency_ms_p95": p50,
            "peak_rss_mb": 90.0, "accuracy_top1": 0.9, "accuracy_drop_pp": 0.5,
        }  # fmt: skip
        at = time.time_ns() - offset * 10**6
        store.add(make_record("result", {**tags, "variant": variant}, fields, at))
    assert push_pending(store, InfluxConfig(url=influxdb_server.url)).pending == 0
    checked = 0
    for path in DASHBOARDS:
        for where, query in queries(load(path)):
            if 'FROM "result"' not in query or "GROUP BY" not in query:
                continue
            answer = influxdb_server.query(interpolate(query, dict.fromkeys(VARIABLES)))
            (result,) = answer["results"]
            shown = [s["tags"]["variant"] for s in result["series"]]
            assert sorted(shown) == sorted(figures), f"{path.name} {where}"
            checked += 1
    assert checked >= 8
    p50 = interpolate(panel("fleet-compare.json", "latency_ms_p50"), dict.fromkeys(VARIABLES))
    (result,) = influxdb_server.query(p50)["results"]
    assert {s["tags"]["variant"]: s["values"][-1][1] for s in result["series"]} == figures


@pytest.mark.parametrize("field", ["ttft_ms", "decode_tokens_per_s"])
def test_generation_panels_show_each_device_at_each_context_length(
    influxdb_server: InfluxServer, results_store: Store, field: str
) -> None:
    push_pending(results_store, InfluxConfig(url=influxdb_server.url))
    query = interpolate(panel("fleet-generation.json", field), dict.fromkeys(VARIABLES))
    (result,) = influxdb_server.query(query)["results"]

    shown = {
        (s["tags"]["device"], s["tags"]["precision"], s["tags"]["context_tokens"]): value
        for s in result["series"]
        for _, value in s["values"]
    }
    latest = max(r.run_id for r in results_store.records(measurement="generation"))
    stored = {
        (r.tags["device"], r.tags["precision"], r.tags["context_tokens"]): r.fields[field]
        for r in results_store.records(latest, measurement="generation")
    }
    assert len(stored) == 3 * 2  # three devices, two context lengths
    assert shown == stored  # the latest night's figure, per device and context length


def test_a_query_without_data_fails_the_check(influxdb_server: InfluxServer) -> None:
    with pytest.raises(AssertionError, match="no values"):
        check_dashboards(influxdb_server)  # the database is empty


SUITE = """\
name: dashboards
measure: {warmup_iterations: 5, min_iterations: 50, max_seconds: 5, threads: 1, batch: 1}
models:
  - name: digits_mlp
    path: %(zoo)s/digits_mlp.onnx
    dataset: %(zoo)s/digits_test.npz
    calibration: %(zoo)s/digits_calib.npz
    variants: [onnx:fp32, onnx:int8]
"""


def lab_run(lab: Path, store: Path, suite: Path, env: dict[str, str]) -> str:
    args = ["run", str(suite), "--inventory", str(lab / "inventory.yaml"), "--devices", "lab"]
    result = CliRunner().invoke(main, [*args, "--store", str(store)], env=env)
    assert result.exit_code in (0, 1), result.output  # 1: a budget may fail on a busy machine
    return result.output


@pytest.mark.slow
def test_dashboards_on_a_real_lab_run(
    lab: Path, influxdb_server: InfluxServer, tmp_path: Path, fleet_home: Path
) -> None:
    """A vision suite and the decoder suite (suites/llm.yaml), so every dashboard has data."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE % {"zoo": ROOT / "zoo"})
    env = {"FLEET_INFLUX_URL": influxdb_server.url}
    for path in (suite, ROOT / "suites" / "llm.yaml"):
        lab_run(lab, tmp_path / "results.sqlite", path, env)
    pushed = CliRunner().invoke(
        results, ["push", "--store", str(tmp_path / "results.sqlite")], env=env
    )
    assert pushed.exit_code == 0, pushed.output

    store = Store(tmp_path / "results.sqlite")
    assert len(influxdb_server.points("result")) == len(store.records(measurement="result")) == 12
    generation = store.records(measurement="generation")
    assert len(influxdb_server.points("generation")) == len(generation) == 3 * 2 * 2
    assert {r.tags["context_tokens"] for r in generation} == {"32", "128"}
    check_dashboards(influxdb_server, empty_ok=("regression",))  # two suites, one night each
