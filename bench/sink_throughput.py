"""Points per second from the SQLite store into InfluxDB 1.x through fleet's sink, against one
plain POST of the same line protocol (the server's own speed), measured in the same run.

    python bench/sink_throughput.py [--points 20000] [--repeats 3] [--batch-size 5000]

Starts its own influxd (Debian's `influxdb` package) on a free loopback port in a temp folder.
Two record shapes: "result" is a full case result as the runner stores it (12 tags, 38
fields); "small" has the same tags and 3 fields, to show the cost per point apart from fields.
The store is filled with `Store.add`, as a run fills it (each record with its line).

Timed, alternating, each into a fresh database: the plain POST (as is and gzip'd) and the
sink's push of the stored records (`push_pending`), with gzip on and off.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the real-server helpers the tests use

from servers import InfluxServer, http  # noqa: E402

from fleet.config import InfluxConfig  # noqa: E402
from fleet.results.influx import V1Writer, push_pending  # noqa: E402
from fleet.results.lineprotocol import to_line  # noqa: E402
from fleet.results.record import make_record  # noqa: E402
from fleet.results.spool import Spool  # noqa: E402
from fleet.results.store import Store  # noqa: E402

TAGS = {
    "suite": "nightly", "device_class": "pi", "arch": "aarch64", "os": "linux",
    "runtime": "onnxruntime", "provider": "cpu", "format": "onnx", "batch": "1", "threads": "4",
}  # fmt: skip
NUMBERS = (  # the numeric fields of a full result (see docs/schema.md)
    "latency_ms_min", "latency_ms_mean", "latency_ms_p50", "latency_ms_p90", "latency_ms_p95",
    "latency_ms_p99", "latency_ms_max", "latency_ms_std", "latency_cv", "throughput_ips",
    "load_ms", "first_inference_ms", "iterations", "duration_s", "rss_baseline_mb",
    "rss_after_load_mb", "peak_rss_mb", "peak_delta_mb", "model_size_mb", "params",
    "accuracy_top1", "accuracy_top5", "accuracy_drop_pp", "agreement_top1", "cosine_min",
    "temp_start_c", "temp_max_c", "latency_p50_ci95_low_ms", "latency_p50_ci95_high_ms",
)  # fmt: skip


def fields(i: int, shape: str) -> dict[str, object]:
    if shape == "small":
        return {"run_id": f"run-{i // 1000}", "latency_ms_p50": 1.0 + i % 97 / 7, "passed": True}
    values: dict[str, object] = {
        name: (i * 7919 + k) % 10007 / 13.0 for k, name in enumerate(NUMBERS)
    }
    values.update(
        run_id=f"20261126T0200Z-{i // 1000:06x}", status="ok", passed=True, valid=True,
        throttled=False, model_sha256=f"{i % 50:064x}", agent_version="0.1.0",
        runtime_version="1.32.0", budget_failures="",
    )  # fmt: skip
    return values


def fill(store: Store, n: int, shape: str) -> float:
    """Store n records as a run does; returns the µs per record that encoding its line took."""
    (synchronous,) = store.db.execute("PRAGMA synchronous").fetchone()
    store.db.execute("PRAGMA synchronous=OFF")  # filling is not what is measured
    start = time.time_ns() - n * 10**6
    records = []
    for i in range(n):
        tags = {**TAGS, "device": f"pi-{i % 40}", "model": f"model_{i % 25}",
                "precision": ("fp32", "fp16", "int8")[i % 3]}  # fmt: skip
        records.append(make_record("result", tags, fields(i, shape), start + i * 10**6))
        store.add(records[-1])
    store.db.execute(f"PRAGMA synchronous={synchronous}")
    started = time.perf_counter()
    for record in records:
        to_line(record)
    return (time.perf_counter() - started) * 1e6 / n


def stages(store: Store, n: int, batch: int) -> str:
    """Where the sink's own time goes, per point, in one thread with no server involved."""
    spool = Spool(store, "bench-stages")
    writer = V1Writer(InfluxConfig(url="http://127.0.0.1:9"))
    spent = {"read": 0.0, "gzip": 0.0, "settle": 0.0}
    after = 0
    while True:
        started = time.perf_counter()
        pending = spool.pending(batch, after)
        spent["read"] += time.perf_counter() - started
        if not pending:
            break
        started = time.perf_counter()
        writer.payload([p.line for p in pending])
        spent["gzip"] += time.perf_counter() - started
        started = time.perf_counter()
        spool.settle(pending, span=(after, pending[-1].record_id))
        spent["settle"] += time.perf_counter() - started
        after = pending[-1].record_id
    with store.transaction() as db:
        db.execute("DELETE FROM sinks WHERE sink = ?", (spool.sink,))
    return ", ".join(f"{stage} {s * 1e6 / n:.1f} µs" for stage, s in spent.items())


def count(server: InfluxServer, db: str) -> int:
    answer = server.query('SELECT count("passed") FROM "result"', db=db)
    return int(answer["results"][0]["series"][0]["values"][0][1])


# What is timed, each into a fresh database: (label, sink or not, gzip).
KINDS = {
    "plain": ("plain POST, one request (baseline)", False, False),
    "plain_gz": ("plain POST, one request, gzip'd", False, True),
    "sink": ("sink: push_pending", True, True),
    "sink_raw": ("sink: push_pending, gzip = false", True, False),
}


def measure(
    server: InfluxServer, store: Store, shape: str, n: int, repeats: int, batch: int
) -> list[str]:
    body = "\n".join(to_line(r) for r in store.records()).encode()
    bodies = {False: body, True: gzip.compress(body, 1)}
    rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for k in range(repeats):
        for kind, (_, sink, compress) in KINDS.items():  # alternating
            db = f"{shape}_{kind}{k}"
            config = InfluxConfig(url=server.url, database=db, batch_size=batch, gzip=compress)
            server.create_database(db)
            started = time.perf_counter()
            if sink:
                report = push_pending(store, config)
                assert (report.sent, report.pending) == (n, 0), report.lines()
            else:
                url = f"{server.url}/write?db={db}&precision=ms"
                headers = {"Content-Encoding": "gzip"} if compress else {}
                status, answer = http("POST", url, bodies[compress], headers)
                assert status == 204, answer
            rates[kind].append(n / (time.perf_counter() - started))
            assert count(server, db) == n
    plain = statistics.median(rates["plain"])
    out = [
        f"{n} points, {len(body) / n:.0f} bytes of line protocol each, batches of {batch}",
        "| what | points/s (median) | / plain: medians | / plain: each run | median |",
        "| --- | --- | --- | --- | --- |",
    ]
    for kind, (label, *_) in KINDS.items():
        median = statistics.median(rates[kind])
        ratios = [x / y for x, y in zip(rates[kind], rates["plain"], strict=True)]
        out.append(
            f"| {label} | {median:,.0f} | {median / plain:.2f} | {_list(ratios, '.2f')}"
            f" | {statistics.median(ratios):.2f} |"
        )
    return [*out, f"sink work per point, one thread, no server: {stages(store, n, batch)}"]


def _list(values: list[float], spec: str = ",.0f") -> str:
    return ", ".join(format(v, spec) for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=InfluxConfig(url="x").batch_size)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {args.repeats} runs each")
    with tempfile.TemporaryDirectory() as tmp:
        server = InfluxServer(Path(tmp) / "influxd")
        server.start()
        try:
            for shape in ("result", "small"):
                store = Store(Path(tmp) / f"{shape}.sqlite")
                encode = fill(store, args.points, shape)
                print(f"encoding a line when a record is stored: {encode:.1f} µs")
                print(f"## {shape} records, load average {os.getloadavg()[0]:.1f}", flush=True)
                lines = measure(server, store, shape, args.points, args.repeats, args.batch_size)
                print("\n".join(lines), flush=True)
                store.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
