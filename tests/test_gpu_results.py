"""Issue 16: the GPU result fields (compute-only latency, engine build, GPU memory, clocks,
power, tegrastats) from an agent's result event to the store, InfluxDB 1.x (real influxd) and
the results table, each with its type, and each documented in docs/schema.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_type_hints

from servers import InfluxServer

from fleet.artifacts import Artifact
from fleet.artifacts.card import model_card
from fleet.config import InfluxConfig
from fleet.inventory import load_inventory
from fleet.plan import make_plan
from fleet.records import DeviceContext, result_record
from fleet.results.influx import push_pending
from fleet.results.lineprotocol import to_line
from fleet.results.record import make_record
from fleet.results.store import Store
from fleet.results.tables import results_table
from fleet.suite import load_suite
from fleet_agent import protocol

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "zoo" / "digits_mlp.onnx"

GPU_FIELDS: dict[str, Any] = {
    "latency_ms_p50": 0.41,
    "compute_latency_ms_p50": 0.12,
    "compute_latency_ms_p95": 0.15,
    "compute_latency_ms_p99": 0.2,
    "engine_build_ms": 93512.0,
    "engine_cache_hit": False,
    "gpu_memory_peak_mb": 1234,  # an int from the agent: stored as a float
    "gpu_clock_mhz_min": 1755,
    "gpu_clock_mhz_max": 1980,
    "gpu_temp_max_c": 41,
    "gpu_power_w_mean": 212.5,
    "gpu_util_mean": 87.0,
    "gpu_throttle_reasons": "sw_power_cap",
    "tegra_gpu_load_mean": 0.0,
    "tegra_emc_load_mean": 0.0,
    "tegra_temp_max_c": 0.0,
    "tegra_power_mw_mean": 0.0,
    "valid": True,
}


def test_gpu_fields_are_stored_and_pushed_with_their_types(
    tmp_path: Path, influxdb_server: InfluxServer
) -> None:
    (tmp_path / "inventory.yaml").write_text("all:\n  hosts:\n    h: {fleet_gpu: 1}\n")
    device = load_inventory(tmp_path / "inventory.yaml").devices["h"]
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(
        f"name: s\nmeasure: {{provider: cuda}}\nmodels:\n  - {{name: m, path: {MLP}}}\n"
    )
    (case,) = make_plan(load_suite(suite_file), [device]).devices[0].cases
    variant = case.model.series_variant(case.variant)
    artifact = Artifact(MLP, "0" * 64, variant, model_card(MLP), "0" * 64)
    event: protocol.Result = {
        "event": "result",
        "case": case.id,
        "tags": {"runtime": "onnxruntime", "provider": "cuda"},
        "fields": GPU_FIELDS,  # type: ignore[typeddict-item]
        "generation": [],
    }
    record = result_record(DeviceContext("s", "r1", device), case, artifact, event)
    line = to_line(record)
    assert ",gpu=1," in line and "engine_cache_hit=false" in line
    # A float without the integer's "i" suffix, whatever digits it is written with.
    assert 'gpu_throttle_reasons="sw_power_cap"' in line and "gpu_memory_peak_mb=1234," in line

    store = Store(tmp_path / "results.sqlite")
    store.start_run("r1", "s", ["h"])
    store.add(record)
    (stored,) = store.records("r1", "result")
    assert stored.fields == record.fields and stored.tags["gpu"] == "1"
    assert stored.fields["gpu_memory_peak_mb"] == 1234.0
    assert isinstance(stored.fields["gpu_memory_peak_mb"], float)
    assert stored.fields["engine_cache_hit"] is False

    url = influxdb_server.url
    report = push_pending(store, InfluxConfig(url=url, retry_total_s=2.0))
    assert (report.sent, report.rejected) == (1, [])
    answer = influxdb_server.query('SHOW FIELD KEYS FROM "result"')
    types = dict(answer["results"][0]["series"][0]["values"])
    assert types["engine_cache_hit"] == "boolean"
    assert types["gpu_throttle_reasons"] == "string"
    numbers = {k for k, v in GPU_FIELDS.items() if not isinstance(v, bool | str)}
    assert {types[k] for k in numbers} == {"float"}
    answer = influxdb_server.query('SHOW TAG VALUES FROM "result" WITH KEY = "gpu"')
    assert answer["results"][0]["series"][0]["values"] == [["gpu", "1"]]
    store.close()


def test_every_result_field_is_documented_in_the_schema() -> None:
    schema = (ROOT / "docs" / "schema.md").read_text()
    fields = get_type_hints(protocol.ResultFields)
    missing = [name for name in fields if f"`{name}`" not in schema]
    assert missing == []


def test_the_results_table_shows_compute_latency_and_build_time_where_measured() -> None:
    tags_ = {"device": "h200", "model": "m", "variant": "onnx:fp32", "runtime": "onnxruntime"}
    gpu = make_record("result", {**tags_, "provider": "cuda"}, {**GPU_FIELDS, "status": "ok"})
    cpu = make_record("result", {**tags_, "provider": "cpu"}, {"latency_ms_p50": 2.5})
    header, *rows = results_table([gpu, cpu]).splitlines()
    assert header.split()[4:12] == ["p50", "ms", "p95", "ms", "compute", "p50", "compute", "p95"]
    assert "build ms" in header and "GPU MB" in header
    assert rows[0].split()[4:10] == ["0.410", "-", "0.120", "0.150", "93512", "1234"]
    assert rows[1].split()[4:10] == ["2.500", "-", "-", "-", "-", "-"]
    assert "compute" not in results_table([cpu])
