"""Repeatability: the CV of p50 over five runs of the same case on one lab device.

Starts a one-device lab (a real sshd pinned to one core, as `fleet lab up` makes it), then runs
the same suite `--runs` times with `fleet.runner.run_suite`, each a separate run: a fresh
agent, three fresh workers, its own warm-up. The case: digits_cnn, ONNX FP32, batch 32,
one thread, the default protocol (3 repetitions) with at least 1 s of timing per repetition.

Prints each run's p50, validity and CPU wait, and the CV of the p50s; target <= 2 %.

    python bench/agent_repeatability.py --runs 5
    python bench/agent_repeatability.py --runs 5 --core 7   # no sshd: the agent on core 7

`--core` runs the agent directly, pinned to that core (what a lab device does, without the
SSH hop, which is outside the timed loop): for a quiet machine that has no sshd.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import yaml
from agent_overhead import agent_result

from fleet.agent_build import build_agent

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--core", help="run the agent pinned to this core, not on a lab device")
    args = parser.parse_args()
    settings = {
        "repetitions": 3,  # the default protocol, spelt out for --core
        "batch": args.batch,
        "min_iterations": 1000,
        "min_seconds": args.min_seconds,
        "warmup_iterations": 100,
    }
    results = on_core(args, settings) if args.core else on_lab(args, settings)
    p50s = []
    for i, f in enumerate(results):
        p50s.append(float(f["latency_ms_p50"]))
        print(
            f"run {i + 1}: p50 {f['latency_ms_p50']:.4f} ms"
            f"  repetitions {f['repetition_p50s_ms']}"
            f"  valid {f['valid']}  cpu wait {f['cpu_wait_frac']:.1%}"
        )
    cv = statistics.stdev(p50s) / statistics.mean(p50s)
    print(f"p50 over {args.runs} runs: mean {statistics.mean(p50s):.4f} ms, CV {cv:.2%}")
    print("target <= 2 %")


def on_core(args: argparse.Namespace, settings: dict[str, Any]) -> list[dict[str, Any]]:
    agent = build_agent().path
    model = ROOT / "zoo" / "digits_cnn.onnx"
    print(f"agent on core {args.core}, batch {args.batch}")
    return [agent_result(agent, model, args.batch, settings, args.core) for _ in range(args.runs)]


def on_lab(args: argparse.Namespace, settings: dict[str, Any]) -> list[dict[str, Any]]:
    # Here, not at the top: --core runs where sshd and fleet's SSH libraries may be missing.
    from fleet import lab
    from fleet.inventory import load_inventory
    from fleet.plan import make_plan
    from fleet.results.store import Store
    from fleet.runner import run_suite
    from fleet.suite import load_suite

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        suite_path = folder / "suite.yaml"
        suite_path.write_text(
            yaml.safe_dump(
                {
                    "name": "repeatability",
                    "measure": settings,
                    "models": [
                        {
                            "name": "digits_cnn",
                            "path": str(ROOT / "zoo" / "digits_cnn.onnx"),
                            "variants": ["onnx:fp32"],
                        }
                    ],
                }
            )
        )
        (device,) = lab.up(folder / "lab", 1)
        try:
            inventory = load_inventory(folder / "lab" / "inventory.yaml")
            devices = inventory.select(["lab"])
            suite = load_suite(suite_path)
            store = Store(folder / "results.sqlite")
            print(f"lab device {device.name} on core {device.cpus}, batch {args.batch}")
            for _ in range(args.runs):
                (result,) = run_suite(make_plan(suite, devices), store).results
                results.append(dict(result.fields))
        finally:
            lab.down(folder / "lab")
    return results


if __name__ == "__main__":
    main()
