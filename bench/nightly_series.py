"""Nightly series: does the regression check flag a real ~10 % slowdown on its night, and
nothing else? The same series given to Apache Otava, side by side.

Starts a lab (`--devices` real sshds, each pinned to one core) and runs the same suite once
per simulated night (`--nights`, one `fleet run` each, gated as a suite with `regressions:`
is). The suite has four models on every device:

- `slower`: ten [64, 256] x [256, 256] products per inference; from night `--change` on,
  eleven (a model that does 10 % more work: a real slowdown, not an edited number);
- `faster`: eleven, then ten from the same night (a planted ~10 % improvement);
- `steady`: ten every night, and `digits_cnn` from the zoo: neither changes.

Then it reads what each night's check said (the `regression` records in the store) and
prints, per device and series: the night the p50 and the minimum latency were first flagged
for the planted change, and every false alarm (any series, any metric). The same p50 and
minimum series go to Apache Otava (its default E-Divisive with t-tests, window 50, p 0.001;
and with a 5 % minimum magnitude, as fleet's minimum effect), night by night as a nightly
job would call it, in its own virtual environment (`--otava-python`; it pins numpy 2.2, so
it cannot share fleet's):

    python -m venv ~/.cache/fleet/otava-venv
    ~/.cache/fleet/otava-venv/bin/pip install apache-otava==0.8.0
    python bench/nightly_series.py --nights 20 --change 15 --devices 1 --lenient --out /tmp/n
    python bench/nightly_series.py --replay /tmp/n    # the analysis again, no runs

**A dedicated device.** A board runs its agent and worker on cores nothing else uses. A lab
device is an sshd on one core of this machine, which other work shares. So the bench gives
each device's sshd (and so every agent and worker it forks) round-robin real-time
scheduling (`chrt -r`, `--realtime PRIORITY`, 0 to leave it off) on the one core the lab
pinned it to: while a worker computes, no ordinary process of this machine runs on its
core, and the worker's CPU time is 95 % of its wall time, whatever the load (the kernel keeps
5 % for the rest, `kernel.sched_rt_runtime_us`). Run devices one at a time (`--parallel 1`,
the default): the other core then carries everything else. This needs root (CAP_SYS_NICE).

It removes the scheduler, not the hardware: on a virtual machine, the core itself can run
slower for seconds at a time when the host is busy (measured on the 2-vCPU development VM:
a pinned real-time loop ran 1.3-1.8x slower in stretches of 1-40 s, a pure-Python loop as
much as a matrix product, whatever ran on the other vCPU), which no scheduling inside the
guest can stop. Such interference only ever adds time; the fastest iterations of a case
escape it, which is why the minimum latency is judged too (docs/regressions.md).
`--lenient` relaxes the suite's validity limits (CPU wait, CV, drift, repetitions' spread) so
that every night is judged even when the core's speed changed within it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fleet.regressions.check import check_run
from fleet.regressions.series import is_valid
from fleet.results.store import Store
from fleet.suite import Regressions

ROOT = Path(__file__).resolve().parents[1]
OTAVA_PYTHON = Path.home() / ".cache" / "fleet" / "otava-venv" / "bin" / "python"
SIZE, ROWS = 256, 64  # ten [64, 256] x [256, 256] products: ~3 ms on one core
LATENCY = ("latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "latency_ms_min", "throughput_ips")
# The figures compared side by side with Otava, each with its short name in the table.
JUDGED = {"latency_ms_p50": "p50", "latency_ms_min": "min"}
EXPECTED = {"slower": "regression", "faster": "improvement"}
OTAVA_LABELS = ("otava", "otava 5%")

SUITE = """\
name: nightly
measure:
  warmup_iterations: 20
  warmup_seconds: 0.5
  min_iterations: 300
  min_seconds: %(seconds)s
  max_seconds: 60
  threads: 1
  batch: 1
%(lenient)s
regressions: {%(confirm)s}  # defaults: latency 5 %%, memory 10 %%, accuracy 0.5 pp, history 5
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
    if args.realtime:
        dedicate(devices, args.realtime)
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
                    "seconds": args.seconds,
                    "confirm": f"confirm: {args.confirm}" if args.confirm else "",
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
            judged = [
                line
                for line in done.stderr.splitlines()
                if line.removeprefix("error: ").startswith(
                    ("regression", "improvement", "cleared", "confirming")
                )
            ]
            print(f"night {night:2d}: exit {done.returncode} in {seconds:.0f} s", flush=True)
            for line in judged if done.returncode < 2 else done.stderr.splitlines()[-3:]:
                print(f"    {line}", flush=True)
            nights.append({"night": night, "exit": done.returncode, "seconds": seconds})
    finally:
        lab.down(folder)
    (out / "nights.json").write_text(json.dumps(nights, indent=1))


def dedicate(devices: list[Any], priority: int) -> None:
    """Give each device's sshd, and so every agent and worker it forks, round-robin real-time
    scheduling at `priority` on the one core the lab pinned it to: while it computes, nothing
    else on this machine runs on that core (the kernel keeps 5 % of each second for others,
    `sched_rt_runtime_us`). Round-robin, not FIFO: the agent's heartbeat shares the core with
    its worker as it would on a board, and is not starved until the worker ends."""
    for device in devices:
        subprocess.run(["chrt", "-r", "-a", "-p", str(priority), str(device.pid)], check=True)


def analyse(args: argparse.Namespace) -> dict[str, Any]:
    out: Path = args.out if args.replay is None else args.replay
    store = Store(out / "results.sqlite")
    runs, confirmations = nightly_runs(store)
    night_of = {run_id: i + 1 for i, run_id in enumerate(runs)}
    change = args.change
    flagged = defaultdict(set)  # run: {(device, model, metric, direction)} its check flagged
    for r in store.records(measurement="regression"):
        if r.fields["direction"] == "cleared":
            continue  # fleet's own record of what follows from the reruns below
        key = (r.tags["device"], r.tags["model"], r.tags["metric"], str(r.fields["direction"]))
        flagged[r.run_id].add(key)
    measured = {  # rerun: {(device, model)} it measured again
        again: {
            (r.tags["device"], r.tags["model"])
            for r in store.records(again, "result")
            if is_valid(r)
        }
        for reruns in confirmations.values()
        for again in reruns
    }
    flags: dict[tuple[str, str], list[tuple[int, str, str]]] = defaultdict(list)
    cleared = []
    for run_id, night in night_of.items():
        for found in sorted(flagged[run_id]):
            # fleet's own rule (fleet.rerun.settle): a flag stands unless a rerun measured
            # its case and did not flag it the same way.
            if all(
                found in flagged[again] or found[:2] not in measured[again]
                for again in confirmations[run_id]
            ):
                flags[found[:2]].append((night, found[2], found[3]))
            else:
                cleared.append(f"{found[0]}/{found[1]} night {night}: {found[2]} {found[3]}")
    # {"lab1/slower": {"latency_ms_p50": [(night, value), ...], ...}}: valid results only
    series: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    valid = invalid = 0
    for r in store.records(measurement="result"):
        if r.tags.get("suite") != "nightly" or r.run_id not in night_of:
            continue
        if not is_valid(r):
            invalid += 1
            continue
        valid += 1
        for metric in JUDGED:
            series[f"{r.tags['device']}/{r.tags['model']}"][metric].append(
                (night_of[r.run_id], float(r.fields[metric]))
            )
    print(f"\n{len(runs)} nights, {valid} valid results, {invalid} noisy or failed (never judged)")
    print(f"verdicts of a series and metric (each night's check again): {verdicts(out)}")

    false_alarms = [
        f"{device}/{model} night {night}: {metric} {direction}"
        for (device, model), found in sorted(flags.items())
        for night, metric, direction in sorted(found)
        if not (EXPECTED.get(model) == direction and metric in LATENCY and night >= change - 1)
    ]
    otava = run_otava(args, series)
    rows = []
    for name, metrics in sorted(series.items()):
        device, model = name.split("/")
        row: dict[str, Any] = {"series": name, "expected": EXPECTED.get(model, "nothing")}
        row["valid"] = len(metrics["latency_ms_p50"])
        for metric, short in JUDGED.items():
            before = np.asarray([v for n, v in metrics[metric] if n < change])
            cv = before.std(ddof=1) / before.mean() if len(before) > 1 else float("nan")
            row[f"{short} CV"] = f"{cv:.1%}"
            planted = [
                n
                for n, m, d in flags.get((device, model), [])
                if m == metric and d == EXPECTED.get(model) and n >= change - 1
            ]
            row[f"fleet {short}"] = min(planted, default=None)
            for label in OTAVA_LABELS:  # an unchanged series has nothing to find
                found = otava_first(otava, f"{name} {metric}", label, change)
                row[f"{label} {short}"] = found if model in EXPECTED else None
        rows.append(row)
    print_table(rows, change)
    print("\nfleet false alarms (any series, any metric, any night):", len(false_alarms))
    for line in false_alarms:
        print("   ", line)
    stored = sum(
        r.fields["direction"] == "cleared" for r in store.records(measurement="regression")
    )
    print(
        f"fleet flags not confirmed by a rerun (regressions.confirm): {len(cleared)}"
        f" ({stored} stored as cleared)"
    )
    for line in cleared:
        print("   ", line)
    otava_alarms = {}
    for label in OTAVA_LABELS:
        otava_alarms[label] = otava_false(otava, label, change)
        print(f"{label} false alarms (p50 and min, any night):", len(otava_alarms[label]))
        for line in otava_alarms[label]:
            print("   ", line)
    summary = {
        "rows": rows,
        "fleet_false_alarms": false_alarms,
        "fleet_not_confirmed": cleared,
        "otava_false_alarms": otava_alarms,
        "valid": valid,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def verdicts(out: Path) -> dict[str, int]:
    """How many verdicts of each kind the nights' checks gave, counted by checking each run
    again, in order, on a copy of the store (the check is deterministic; the regression
    records keep only the flags)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "results.sqlite"
        shutil.copyfile(out / "results.sqlite", copy)
        store = Store(copy)
        states = Counter(
            v.state
            for run_id in nightly_runs(store)[0]
            for v in check_run(store, run_id, Regressions(), gate=True).verdicts
        )
    return dict(sorted(states.items()))


def nightly_runs(store: Store) -> tuple[list[str], dict[str, list[str]]]:
    """The nights' runs in order, and for each the runs that confirmed its regressions
    (reruns of it, `regressions.confirm`)."""
    runs = [r.run_id for r in store.runs() if r.suite == "nightly"]
    rerun_of = {run_id: (store.run_spec(run_id) or {}).get("rerun_of") for run_id in runs}
    confirmations: dict[str, list[str]] = defaultdict(list)
    for run_id, first in rerun_of.items():
        if first:
            confirmations[first].append(run_id)
    return [run_id for run_id in runs if not rerun_of[run_id]], confirmations


def run_otava(
    args: argparse.Namespace, series: dict[str, dict[str, list[tuple[int, float]]]]
) -> dict[str, Any]:
    """Otava's change points, night by night, per series and metric: {"lab1/slower
    latency_ms_p50": {"nights": [...], "otava": [[[night, change %], ...] per night]}}."""
    python = Path(args.otava_python)
    if not python.exists():
        print(f"\n(no Otava: {python} is missing; see the module docstring)")
        return {}
    values = {
        f"{name} {metric}": [v for _, v in points]
        for name, metrics in series.items()
        for metric, points in metrics.items()
    }
    done = subprocess.run(
        [str(python), "-c", OTAVA], input=json.dumps(values), capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    found: dict[str, Any] = json.loads(done.stdout)
    for name, metrics in series.items():
        for metric, points in metrics.items():
            nights = [n for n, _ in points]  # Otava's index i is the i-th valid night
            for label in OTAVA_LABELS:
                found[f"{name} {metric}"][label] = [
                    [[nights[index], pct] for index, pct in cps]
                    for cps in found[f"{name} {metric}"][label]
                ]
            found[f"{name} {metric}"]["nights"] = nights[1:]  # judged from the second on
    return found


def otava_first(otava: dict[str, Any], key: str, label: str, change: int) -> int | None:
    """The night Otava first reports a change point at the planted night (±1)."""
    found = otava.get(key, {})
    for night, cps in zip(found.get("nights", []), found.get(label, []), strict=True):
        if any(abs(cp - change) <= 1 for cp, _ in cps):
            return int(night)
    return None


def otava_false(otava: dict[str, Any], label: str, change: int) -> list[str]:
    alarms = []
    for key, found in sorted(otava.items()):
        planted = key.split("/")[1].split()[0] in EXPECTED
        seen = set()
        for night, cps in zip(found["nights"], found[label], strict=True):
            for cp, pct in cps:
                if (planted and abs(cp - change) <= 1) or cp in seen:
                    continue
                seen.add(cp)
                alarms.append(f"{key}: change point at night {cp} ({pct:+.1f} %),"
                              f" first reported on night {night}")  # fmt: skip
    return alarms


def print_table(rows: list[dict[str, Any]], change: int) -> None:
    print(f"\nplanted change on night {change}; the night each first flags it (± 1):")
    columns = list(rows[0]) if rows else []
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
    parser.add_argument(
        "--seconds", type=float, default=6.0, help="timed seconds of each repetition of a case"
    )
    parser.add_argument("--out", type=Path, required=False, help="folder for the lab and the store")
    parser.add_argument("--replay", type=Path, help="analyse the runs in this folder again")
    parser.add_argument("--lenient", action="store_true", help="relax the validity limits")
    parser.add_argument(
        "--confirm", type=int, default=0,
        help="regressions.confirm: measure a night's flagged cases again that many times",
    )  # fmt: skip
    parser.add_argument(
        "--realtime", type=int, default=10, metavar="PRIORITY",
        help="real-time priority of the devices on their cores (0: share them like any process)",
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
