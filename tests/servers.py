"""Real result databases for tests: InfluxDB 1.x (`influxd`) and VictoriaMetrics.

Each server runs from its own temporary folder on free 127.0.0.1 ports, is started by a
fixture and stopped (and waited for) when the test ends, so no process outlives the tests.
The classes are plain Python, so `bench/` uses them too.

Fixtures: `influxdb_server` (database "fleet" created), `victoria_metrics_server`, and
`results_store` (a store with two nights of results from `fill_store`).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from fleet.records import generation_records
from fleet.results.record import Record, make_record
from fleet.results.store import Store
from fleet_agent.protocol import GenerationEntry


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(
    method: str, url: str, data: bytes | None = None, headers: Mapping[str, str] | None = None
) -> tuple[int, bytes]:
    """One request; returns the status and body, also for 4xx/5xx answers."""
    request = urllib.request.Request(url, data=data, headers=dict(headers or {}), method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Server:
    """A server process with a health URL; `start()` waits until it answers."""

    name = "server"
    health_path = "/"

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.log = root / f"{self.name}.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout_s: float = 15.0) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")
            try:
                if http("GET", self.url + self.health_path)[0] < 300:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer on {self.url} within {timeout_s}s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


class InfluxServer(Server):
    """InfluxDB 1.x with its data in `root`; survives stop()/start() with its data.

    With `auth=True` the server requires a user; `start()` then creates the admin user
    ADMIN with password ADMIN_PASSWORD, which `query()` uses.
    """

    name = "influxd"
    health_path = "/ping"
    ADMIN, ADMIN_PASSWORD = "admin", "admin-secret"

    def __init__(self, root: Path, auth: bool = False) -> None:
        super().__init__(root)
        self.auth = auth
        self.admin_created = False
        self.rpc_port = free_port()
        self.config = root / "influxdb.conf"
        # Everything in the temp folder, on loopback, quiet; no body limit, for the benchmark.
        self.config.write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{root / "meta"}"
  logging-enabled = false
[data]
  dir = "{root / "data"}"
  wal-dir = "{root / "wal"}"
  query-log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
  max-body-size = 0
  auth-enabled = {"true" if auth else "false"}
[logging]
  level = "warn"
"""
        )

    def argv(self) -> list[str]:
        return ["influxd", "-config", str(self.config)]

    def start(self, timeout_s: float = 15.0) -> None:
        super().start(timeout_s)
        if self.auth and not self.admin_created:  # the first user needs no credentials
            self.admin_created = True
            self.query(
                f"CREATE USER {self.ADMIN} WITH PASSWORD '{self.ADMIN_PASSWORD}'"
                " WITH ALL PRIVILEGES",
                method="POST",
            )

    def query(self, q: str, db: str = "fleet", method: str = "GET") -> dict[str, Any]:
        """Run InfluxQL; returns the decoded JSON answer and fails on any non-200 answer."""
        credentials = {"u": self.ADMIN, "p": self.ADMIN_PASSWORD} if self.auth else {}
        url = f"{self.url}/query?{urllib.parse.urlencode(credentials)}"
        params = urllib.parse.urlencode({"q": q, "db": db, "epoch": "ns"})
        if method == "GET":
            status, body = http("GET", f"{url}&{params}")
        else:
            status, body = http("POST", url, params.encode())
        if status != 200:
            raise AssertionError(f"{q!r}: HTTP {status}: {body[:500]!r}")
        answer: dict[str, Any] = json.loads(body)
        return answer

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"', db=name, method="POST")

    def points(self, measurement: str, db: str = "fleet") -> list[dict[str, Any]]:
        """Every point of a measurement with its tags, as {column: value} dicts."""
        answer = self.query(f'SELECT * FROM "{measurement}" GROUP BY *', db=db)
        rows = []
        for series in answer["results"][0].get("series", []):
            tags = series.get("tags", {})
            for values in series["values"]:
                rows.append({**tags, **dict(zip(series["columns"], values, strict=True))})
        return rows


class VictoriaMetricsServer(Server):
    """VictoriaMetrics: accepts InfluxDB line protocol on /write and /api/v2/write."""

    name = "victoria-metrics"
    health_path = "/health"

    def argv(self) -> list[str]:
        return [
            "victoria-metrics",
            f"-storageDataPath={self.root / 'data'}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-loggerLevel=WARN",
        ]

    def export(self, match: str) -> list[dict[str, Any]]:
        """Read back series matching a selector such as {__name__=~"result_.*"}."""
        http("GET", f"{self.url}/internal/force_flush")  # make just-written rows searchable
        status, body = http(
            "POST", f"{self.url}/api/v1/export", urllib.parse.urlencode({"match[]": match}).encode()
        )
        if status != 200:
            raise AssertionError(f"export {match}: HTTP {status}: {body[:500]!r}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]


@contextlib.contextmanager
def running_influxdb(root: Path, auth: bool = False) -> Iterator[InfluxServer]:
    """A fresh influxd in `root` with an empty database "fleet", stopped afterwards."""
    server = InfluxServer(root, auth=auth)
    server.start()
    try:
        server.create_database("fleet")
        yield server
    finally:
        server.stop()


@pytest.fixture
def influxdb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    with running_influxdb(tmp_path_factory.mktemp("influxd")) as server:
        yield server


@pytest.fixture
def victoria_metrics_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[VictoriaMetricsServer]:
    server = VictoriaMetricsServer(tmp_path_factory.mktemp("victoria-metrics"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


# A small but complete picture of two nights on three devices, as the runner stores it.
DEVICES = {
    "pi5-a": {"device_class": "pi", "arch": "aarch64"},
    "orin-1": {"device_class": "jetson", "arch": "aarch64"},
    "lab1": {"device_class": "lab", "arch": "x86_64"},
}
VARIANTS = [
    ("digits_mlp", "onnx", "fp32"),
    ("digits_mlp", "onnx", "int8"),
    ("digits_cnn", "onnx", "fp32"),
    ("digits_cnn", "tflite", "int8"),
]
DAY_NS = 86_400 * 10**9


def fill_store(store: Store, runs: int = 2) -> list[Record]:
    """Store `runs` nightly runs (the last one ending now) with every measurement fleet writes.

    On the first night digits_cnn tflite:int8 times out on the Pi; everything else has numbers.
    Each device also runs the decoder tiny_gpt: a result, then a generation record per context
    length, made by the runner's own `fleet.records.generation_records`.
    """
    added = []

    def add(
        measurement: str, tags: Mapping[str, object], fields: Mapping[str, object], at: int
    ) -> Record:
        added.append(make_record(measurement, tags, fields, at))
        store.add(added[-1])
        return added[-1]

    first = time.time_ns() - (runs - 1) * DAY_NS - 60 * 10**9
    for night in range(runs):
        run_id = f"2026112{night}T020000Z-{night:06x}"
        start = first + night * DAY_NS
        store.start_run(run_id, "smoke", list(DEVICES))
        results = []
        for d, (device, facts) in enumerate(DEVICES.items()):
            at = start + d * 10**7
            base = {"suite": "smoke", "device": device, "os": "linux", **facts}
            add("device", base, {"run_id": run_id, "ram_total_mb": 4096 * (d + 1)}, at)
            case = {"provider": "cpu", "batch": 1, "threads": 1}
            for v, (model, fmt, precision) in enumerate(VARIANTS):
                runtime = "onnxruntime" if fmt == "onnx" else "litert"
                tags = {**base, **case, "model": model, "format": fmt, "precision": precision}
                tags["variant"] = f"{fmt}:{precision}" + ("-static" if precision == "int8" else "")
                fields: dict[str, object] = {"run_id": run_id, "model_sha256": f"{v:064x}"}
                if night == 0 and device == "pi5-a" and (fmt, precision) == ("tflite", "int8"):
                    fields.update(status="timeout", message="took over 60 s", passed=False)
                else:
                    p50 = (d + 1) * (1 + v) * (2.0 if precision == "fp32" else 1.0) + night / 10
                    int8 = precision == "int8"
                    fields.update(
                        status="ok",
                        latency_ms_p50=p50,
                        latency_ms_p95=p50 * 1.2,
                        peak_rss_mb=50 + 10 * v + d,
                        accuracy_top1=0.96 if int8 else 0.97,
                        accuracy_drop_pp=1.0 if int8 else 0.0,
                        iterations=300,
                        duration_s=2.5,
                        valid=True,
                        passed=p50 < 10,
                    )
                at += 10**6
                results.append(add("result", {**tags, "runtime": runtime}, fields, at))
            decoder = {**base, **case, "model": "tiny_gpt", "format": "onnx", "precision": "fp32"}
            decoder["variant"] = "onnx:fp32"
            p50 = 2.0 * (d + 1) + night / 10
            fields = {
                "run_id": run_id,
                "model_sha256": f"{len(VARIANTS):064x}",
                "agent_version": "0.1.0",
                "runtime_version": "1.32.0",
                "status": "ok",
                "latency_ms_p50": p50,
                "latency_ms_p95": p50 * 1.2,
                "peak_rss_mb": 73 + d,
                "accuracy_top1": 0.53,
                "iterations": 200,
                "duration_s": 3.0,
                "valid": True,
                "passed": True,
                "budget_failures": "",
            }
            at += 10**6
            results.append(add("result", {**decoder, "runtime": "onnxruntime"}, fields, at))
            entries: list[GenerationEntry] = []
            for context in (32, 128):
                ttft = context / 16 * (d + 1) + night / 10
                entries.append(
                    {
                        "context_tokens": float(context),  # the runner moves it to the tags
                        "ttft_ms": ttft,
                        "prefill_tokens_per_s": context / ttft * 1000,
                        "decode_tokens_per_s": 250 / (d + 1) - night,
                        "decode_tokens": 32.0,
                    }
                )
            for record in generation_records(results[-1], entries):
                add(record.measurement, record.tags, record.fields, at + 1000)
        failed = [r for r in results if r.status != "ok" or r.fields.get("passed") is False]
        summary = {"run_id": run_id, "exit_code": 1, "results": len(results)}
        summary.update(failed=len(failed), devices=",".join(DEVICES), duration_s=40.0)
        add("run", {"suite": "smoke"}, summary, start + 10**8)
        store.finish_run(run_id, 1)
    return added


@pytest.fixture
def results_store(tmp_path: Path) -> Store:
    """A store holding `fill_store`'s two nights."""
    store = Store(tmp_path / "results.sqlite")
    fill_store(store)
    return store
