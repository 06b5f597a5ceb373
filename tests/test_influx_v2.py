"""The v2 dialect (influxdb-client's write API) against a real server: VictoriaMetrics, which
speaks the InfluxDB 2 write protocol. Read back through its export API."""

from __future__ import annotations

import pytest
from servers import VictoriaMetricsServer, free_port

from fleet.config import InfluxConfig, Secret
from fleet.results.influx import push_pending
from fleet.results.store import Store


def v2(url: str, gzip: bool = True) -> InfluxConfig:
    return InfluxConfig(
        url=url,
        dialect="v2",
        bucket="fleet",
        org="lab",
        token=Secret("t"),
        retry_total_s=0.5,
        gzip=gzip,
    )


@pytest.mark.parametrize("gzip", [True, False])
def test_v2_writes_every_result_and_they_read_back(
    victoria_metrics_server: VictoriaMetricsServer, results_store: Store, gzip: bool
) -> None:
    report = push_pending(results_store, v2(victoria_metrics_server.url, gzip))
    assert (report.sent, report.pending, report.errors) == (len(results_store.records()), 0, [])

    # VictoriaMetrics names a field's series MEASUREMENT_FIELD and keeps tags as labels.
    keys = ("device", "model", "format", "precision")
    stored = {
        (*(r.tags[k] for k in keys), r.time_ns // 10**6): r.fields["latency_ms_p50"]
        for r in results_store.records(measurement="result")
        if "latency_ms_p50" in r.fields
    }
    series = victoria_metrics_server.export('{__name__="result_latency_ms_p50"}')
    read = {
        (*(s["metric"][k] for k in keys), t): v
        for s in series
        for t, v in zip(s["timestamps"], s["values"], strict=True)
    }
    assert len(stored) == 29
    assert read == stored
    assert all(s["metric"]["suite"] == "smoke" and "run_id" not in s["metric"] for s in series)
    ttft = victoria_metrics_server.export('{__name__="generation_ttft_ms"}')
    assert sum(len(s["values"]) for s in ttft) == 12
    assert {s["metric"]["context_tokens"] for s in ttft} == {"32", "128"}


def test_v2_server_down_keeps_results_spooled(
    victoria_metrics_server: VictoriaMetricsServer, results_store: Store
) -> None:
    victoria_metrics_server.stop()
    report = push_pending(results_store, v2(victoria_metrics_server.url))
    assert report.sent == 0
    assert report.pending == len(results_store.records())
    assert "unreachable" in report.errors[0]

    victoria_metrics_server.start()
    assert push_pending(results_store, v2(victoria_metrics_server.url)).pending == 0
    points = victoria_metrics_server.export('{__name__="run_exit_code"}')
    assert sum(len(s["values"]) for s in points) == 2


def test_v2_nothing_listening_is_reported_not_raised(results_store: Store) -> None:
    report = push_pending(results_store, v2(f"http://127.0.0.1:{free_port()}"))
    assert report.pending == len(results_store.records())
    assert "Connection refused" in report.errors[0]
