"""Nightly series: does the regression check flag a real ~10 % slowdown on its night, and
nothing else? The same series given to Apache Otava, side by side.

Starts a lab (`--devices` real sshds, each pinned to one core) and runs the same suite once
per simulated night (`--nights`, one `fleet run` each, gated as a suite with `regressions:`
is). The suite has four models on every device:

- `slower`: ten products with one 256x256 weight per inference; from night `--change` on, eleven (a
  model that does 10 % more work: a real slowdown, not an edited number);
- `faster`: eleven, then ten from the same night (a planted ~10 % improvement);
- `steady`: ten every night, and `digits_cnn` from the zoo: neither changes.

Then it reads what each night's check said (the `regression` records in the store) and
prints, per device and series: the night the latency regression (or improvement) was first
flagged, and every false alarm. The same p50 series go to Apache Otava (its default
E-Divisive with t-tests, window 50, p 0.001; and with a 5 % minimum magnitude, as fleet's
minimum effect), night by night as a nightly job would call it, in its own virtual
environment (`--otava-python`; it pins numpy 2.2, so it cannot share fleet's):

    python -m venv ~/.cache/fleet/otava-venv
    ~/.cache/fleet/otava-venv/bin/pip install apache-otava==0.8.0
    python bench/nightly_series.py --nights 20 --change 15 --devices 2 --out /tmp/nightly
    python bench/nightly_series.py --replay /tmp/nightly    # the analysis again, no runs

A real device has its cores to itself; a lab device shares this machine with everything
else on it. So that the series measures fleet and not the neighbours, the devices' sshds
(and so every agent and worker they start) go into a CPU cgroup of the highest weight:
when the machine is busy the rest waits, not the device (`--no-priority` turns it off).
`--lenient` relaxes the suite's validity limits (CPU wait, CV, drift) for a machine so busy
that most results would otherwise be marked noisy and never judged.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fleet.regressions.series import is_valid
from fleet.results.store import Store

ROOT = Path(__file__).resolve().parents[1]
OTAVA_PYTHON = Path.home() / ".cache" / "fleet" / "otava-venv" / "bin" / "python"
SIZE, ROWS = 256, 64  # ten [64, 256] x [256, 256] products: ~3 ms on one core
LATENCY = ("latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "throughput_ips")

SUITE = """\
name: nightly
measure:
  warmup_iterations: 20
  warmup_seconds: 0.5
  min_iterations: 300
  max_seconds: 20
  threads: 1
  batch: 1
%(lenient)s
regressions: {}    # the defaults: latency 5 %%, memory 10 %%, accuracy 0.5 pp, history 5, gated
models:
  - {name: slower, path: %(slower)s}
  - {name: faster, path: %(faster)s}
  - {name: steady, path: %(ten)s}
  - name: digits_cnn
    path: %(zoo)s/digits_cnn.onnx
    dataset: %(zoo)s/digits_cnn_test.npz
"""
LENIENT = "  cv_max: 1000\n  drift_max: 1000\n  repetition_cv_max: 1000\n  cpu_wait_max: 1000"

# Runs in Otava's environment: {series: [p50, ...]} on stdin; for each series and each
# night t, the change points Otava finds in the first t values, as [[index, change %], ...].
OTAVA = """
import json, sys
from otava.analysis import compute_change_points
series = json.load(sys.stdin)
out = {}
for name, values in series.items():
    for label, magnitude in (("otava", 0.0), ("otava 5%", 0.05)):
        nights = []
        for t in range(2, len(values) + 1):
            cps, _ = compute_change_points(values[:t], window_len=50, max_pvalue=0.001,
                                           min_magnitude=magnitude)
            nights.append([[int(cp.index), float(cp.stats.forward_change_percent())] for cp in cps])
        out.setdefault(name, {})[label] = nights
json.dump(out, sys.stdout)
"""


def matmul_chain(path: Path, layers: int) -> Path:
    """`layers` products with one shared SIZE x SIZE weight: more layers, more work, the same
    memory."""
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((SIZE, SIZE)) / np.sqrt(SIZE)).astype(np.float32)
    names = ["input", *(f"h{i}" for i in range(layers - 1)), "output"]
    nodes = [helper.make_node("MatMul", [a, "w"], [b]) for a, b in itertools.pairwise(names)]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", ROWS, SIZE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", ROWS, SIZE])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def run_nights(args: argparse.Namespace) -> None:
    from fleet import lab

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    ten, eleven = matmul_chain(out / "chain10.onnx", 10), matmul_chain(out / "chain11.onnx", 11)
    folder = out / "lab"
    devices = lab.up(folder, args.devices)
    group = priority_cgroup([d.pid for d in devices]) if args.priority else None
    nights = []
    try:
        for night in range(1, args.nights + 1):
            changed = night >= args.change
            suite = out / "suite.yaml"
            suite.write_text(
                SUITE
                % {
                    "slower": eleven if changed else ten,
                    "faster": ten if changed else eleven,
                    "ten": ten,
                    "zoo": ROOT / "zoo",
                    "lenient": LENIENT if args.lenient else "",
                }
            )
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "fleet", "run", str(suite), "--inventory",
                 str(folder / "inventory.yaml"), "--devices", "lab", "--store",
                 str(out / "results.sqlite"), "--parallel", str(args.parallel)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            seconds = time.monotonic() - started
            judged = [line for line in done.stderr.splitlines() if "regression" in line]
            print(f"night {night:2d}: exit {done.returncode} in {seconds:.0f} s", flush=True)
            for line in judged if done.returncode < 2 else done.stderr.splitlines()[-3:]:
                print(f"    {line}", flush=True)
            nights.append({"night": night, "exit": done.returncode, "seconds": seconds})
    finally:
        lab.down(folder)
        if group is not None:
            with contextlib.suppress(OSError):
                group.rmdir()
    (out / "nights.json").write_text(json.dumps(nights, indent=1))


def priority_cgroup(pids: list[int]) -> Path | None:
    """A CPU cgroup of the highest weight holding `pids` (cgroup v1 `cpu.shares` or v2
    `cpu.weight`); None, with a line saying so, where this machine does not allow one."""
    v1 = Path("/sys/fs/cgroup/cpu")
    base = v1 if (v1 / "cpu.shares").exists() else Path("/sys/fs/cgroup")
    group = base / f"fleet-nightly-{os.getpid()}"
    try:
        group.mkdir()
        if base == v1:
            (group / "cpu.shares").write_text("262144")
        else:
            (group / "cpu.weight").write_text("10000")
        for pid in pids:
            (group / "cgroup.procs").write_text(str(pid))
    except OSError as error:
        print(f"(no priority cgroup: {error}; the devices share the CPU with everything else)")
        with contextlib.suppress(OSError):
            group.rmdir()
        return None
    return group


def analyse(args: argparse.Namespace) -> dict[str, Any]:
    out: Path = args.out if args.replay is None else args.replay
    store = Store(out / "results.sqlite")
    runs = [r.run_id for r in store.runs() if r.suite == "nightly"]
    night_of = {run_id: i + 1 for i, run_id in enumerate(runs)}
    change = args.change
    flags: dict[tuple[str, str], list[tuple[int, str, str]]] = defaultdict(list)
    for r in store.records(measurement="regression"):
        key = (r.tags["device"], r.tags["model"])
        flags[key].append(
            (night_of[r.run_id], r.tags["metric"], str(r.fields["direction"]))
        )  # fmt: skip
    results = [r for r in store.records(measurement="result") if r.tags.get("suite") == "nightly"]
    series: dict[str, list[float]] = defaultdict(list)
    valid = invalid = 0
    for r in results:
        if is_valid(r) and r.number("latency_ms_p50") is not None:
            series[f"{r.tags['device']}/{r.tags['model']}"].append(
                float(r.fields["latency_ms_p50"])
            )
            valid += 1
        else:
            invalid += 1
    print(f"\n{len(runs)} nights, {valid} valid results, {invalid} noisy or failed (never judged)")

    expected = {"slower": "regression", "faster": "improvement"}
    rows = []
    false_alarms = []
    for (device, model), found in sorted(flags.items()):
        for night, metric, direction in sorted(found):
            planted = expected.get(model) == direction and metric in LATENCY and night >= change - 1
            if not planted:
                false_alarms.append(f"{device}/{model} night {night}: {metric} {direction}")
    for name, values in sorted(series.items()):
        device, model = name.split("/")
        p50 = [(n, d) for n, m, d in flags.get((device, model), []) if m == "latency_ms_p50"]
        planted = [n for n, d in p50 if d == expected.get(model) and n >= change - 1]
        first = min(planted, default=None)
        before = np.asarray(values[: change - 1])
        noise = float(before.std(ddof=1) / before.mean()) if len(before) > 1 else float("nan")
        row: dict[str, Any] = {"series": name, "expected": expected.get(model, "nothing")}
        rows.append({**row, "valid": len(values), "p50 CV": f"{noise:.1%}", "fleet_first": first})
    otava = run_otava(args, series)
    for row in rows:
        for label in ("otava", "otava 5%"):
            row[label] = otava_first(otava, row["series"], label, change)
    print_table(rows, change)
    print("\nfleet false alarms (any series, any metric, any night):", len(false_alarms))
    for line in false_alarms:
        print("   ", line)
    for label in ("otava", "otava 5%"):
        alarms = otava_false(otava, label, change)
        print(f"{label} false alarms (p50, any night):", len(alarms))
        for line in alarms:
            print("   ", line)
    summary = {"rows": rows, "fleet_false_alarms": false_alarms, "valid": valid}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def run_otava(args: argparse.Namespace, series: dict[str, list[float]]) -> dict[str, Any]:
    python = Path(args.otava_python)
    if not python.exists():
        print(f"\n(no Otava: {python} is missing; see the module docstring)")
        return {}
    done = subprocess.run(
        [str(python), "-c", OTAVA], input=json.dumps(series), capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def otava_first(otava: dict[str, Any], name: str, label: str, change: int) -> int | None:
    """The night Otava first reports a change point at the planted night (±1)."""
    # The values are valid nights only; with every night valid, index i is night i + 1.
    for t, cps in enumerate(otava.get(name, {}).get(label, []), start=2):
        if any(abs(index + 1 - change) <= 1 for index, _ in cps):
            return t
    return None


def otava_false(otava: dict[str, Any], label: str, change: int) -> list[str]:
    alarms = []
    for name, found in sorted(otava.items()):
        planted = name.split("/")[1] in ("slower", "faster")
        seen = set()
        for t, cps in enumerate(found[label], start=2):
            for index, pct in cps:
                if (planted and abs(index + 1 - change) <= 1) or index in seen:
                    continue
                seen.add(index)
                alarms.append(f"{name}: change point at night {index + 1} ({pct:+.1f} %),"
                              f" first reported on night {t}")  # fmt: skip
    return alarms


def print_table(rows: list[dict[str, Any]], change: int) -> None:
    print(f"\nplanted change on night {change}; the night each first flags it (p50):")
    columns = ["series", "expected", "valid", "p50 CV", "fleet_first", "otava", "otava 5%"]
    print(" | ".join(columns))
    print(" | ".join("---" for _ in columns))
    for row in rows:
        print(" | ".join("-" if row.get(c) is None else str(row.get(c)) for c in columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=20)
    parser.add_argument("--change", type=int, default=15, help="the first night changed")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=1, help="devices measured at once")
    parser.add_argument("--out", type=Path, required=False, help="folder for the lab and the store")
    parser.add_argument("--replay", type=Path, help="analyse the runs in this folder again")
    parser.add_argument("--lenient", action="store_true", help="relax the validity limits")
    parser.add_argument(
        "--no-priority", dest="priority", action="store_false",
        help="leave the devices in this machine's CPU cgroup (no priority over its other work)",
    )  # fmt: skip
    parser.add_argument("--otava-python", default=str(OTAVA_PYTHON))
    args = parser.parse_args()
    if args.replay is None and args.out is None:
        parser.error("--out FOLDER (a new run) or --replay FOLDER (the analysis again)")
    if args.replay is None:
        run_nights(args)
    analyse(args)


if __name__ == "__main__":
    main()
