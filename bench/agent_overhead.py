"""Agent overhead: the agent's p50 against a bare in-process `session.run` loop.

Both sides run the same model, with the same session options (1 intra-op and 1 inter-op
thread, all graph optimisations), on the same seeded inputs, in a fresh process pinned to the
same core, for the same number of timed runs after the same warm-up:

- agent: `python agent.pyz serve` with a one-case job (one repetition); its result's p50;
- bare: a few lines of Python: `sess.run(None, feed)` in a loop timed with
  `time.perf_counter_ns`, the p50 of the same count.

They alternate, pair after pair, so that a change of load on a shared machine hits both.
The ratio of the medians (agent / bare) is the agent's overhead; target <= 1.03.

    python bench/agent_overhead.py --pairs 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from benchjob import agent_job

from fleet.agent_build import build_agent

ROOT = Path(__file__).resolve().parents[1]

BARE = r"""
import json, sys, time
import numpy as np
import onnxruntime as ort
from fleet_agent import runtimes
model, batch, warmup, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.inter_op_num_threads = 1
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
types = {"tensor(float)": np.float32, "tensor(int64)": np.int64}
spec = [(i.name, tuple(d if isinstance(d, int) else None for d in i.shape), types[i.type])
        for i in sess.get_inputs()]
feed = runtimes.feed_for(spec, batch, 0)  # the agent's inputs: same seed, same values
for _ in range(warmup):
    sess.run(None, feed)
samples = []
for _ in range(runs):
    t0 = time.perf_counter_ns()
    sess.run(None, feed)
    samples.append((time.perf_counter_ns() - t0) / 1e6)
samples.sort()
print(json.dumps({"p50": samples[len(samples) // 2]}))
"""


def agent_result(
    agent: Path, model: Path, batch: int, settings: Mapping[str, object], core: str
) -> dict[str, object]:
    """The fields of the agent's result for one case of `model`, run pinned to `core`."""
    with tempfile.TemporaryDirectory() as workdir:
        job = agent_job(model, workdir, batch=batch, timeout_s=600.0, **settings)
        out = subprocess.run(
            ["taskset", "-c", core, sys.executable, str(agent), "serve"],
            input=json.dumps(job) + "\n",
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    (result,) = [e for e in map(json.loads, out.splitlines()) if e["event"] == "result"]
    fields: dict[str, object] = result["fields"]
    return fields


def agent_p50(agent: Path, model: Path, batch: int, warmup: int, runs: int, core: str) -> float:
    # The agent warms up for at least `warmup` runs (more only while still unsettled) and
    # times exactly `runs` (enough for p99 with one repetition).
    settings = {
        "warmup_iterations": warmup,
        "min_iterations": runs,
        "max_seconds": 600,
        "repetitions": 1,
    }
    fields = agent_result(agent, model, batch, settings, core)
    assert fields["iterations"] == runs, fields["iterations"]
    return float(str(fields["latency_ms_p50"]))


def bare_p50(model: Path, batch: int, warmup: int, runs: int, core: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "agents")}
    argv = [sys.executable, "-c", BARE, str(model), str(batch), str(warmup), str(runs)]
    out = subprocess.run(
        ["taskset", "-c", core, *argv],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    return float(json.loads(out)["p50"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "zoo" / "digits_cnn.onnx")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--core", default=str(max(os.sched_getaffinity(0))))
    args = parser.parse_args()
    agent = build_agent().path
    model = args.model.resolve()
    print(f"model {model.name} batch {args.batch}, {args.runs} timed runs, core {args.core}")
    agents, bares = [], []
    for i in range(args.pairs):
        a = agent_p50(agent, model, args.batch, args.warmup, args.runs, args.core)
        b = bare_p50(model, args.batch, args.warmup, args.runs, args.core)
        agents.append(a)
        bares.append(b)
        print(f"pair {i + 1}: agent p50 {a:.4f} ms  bare p50 {b:.4f} ms  ratio {a / b:.3f}")
    a, b = statistics.median(agents), statistics.median(bares)
    ratios = sorted(x / y for x, y in zip(agents, bares, strict=True))
    print(f"median: agent {a:.4f} ms  bare {b:.4f} ms  ratio {a / b:.3f} (target <= 1.03)")
    print(f"per-pair ratios: {', '.join(f'{r:.3f}' for r in ratios)}")


if __name__ == "__main__":
    main()
