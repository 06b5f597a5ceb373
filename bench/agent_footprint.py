"""Footprint: the agent's own memory and start-up time, against a bare Python interpreter.

The agent process (`python agent.pyz serve`) never imports a runtime: workers do. Measured,
`--repeats` times each, alternating, every process pinned to the same core:

- agent: time from spawn to its `hello` line and to its `sysinfo` line, and its peak RSS
  (VmHWM, from /proc) while the first case's worker runs, and while the second one's runs,
  after it has imported numpy to combine the first case's repetitions;
- baseline: `python -c` that reads one line and prints one: interpreter start-up and RSS;
- for scale: the RSS of a Python that has imported numpy, and one that has imported
  onnxruntime (what the agent would weigh if it imported the runtime itself).

    python bench/agent_footprint.py --repeats 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchjob import agent_job

from fleet.agent_build import build_agent

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "zoo" / "digits_mlp.onnx"
BARE = "import sys; sys.stdin.readline(); print('{}', flush=True); sys.stdin.read()"
IMPORTING = "import {}, sys; print('{{}}', flush=True); sys.stdin.read()"


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def job(workdir: str) -> str:
    """Two cases of the MLP: the agent's memory during the first and during the second."""
    job = agent_job(MODEL, workdir, min_iterations=1000, min_seconds=1.0, repetitions=1)
    job["cases"].append({**job["cases"][0], "id": "second"})
    return json.dumps(job)


def agent_once(agent: Path, core: str) -> tuple[float, float, float, float]:
    """(seconds to hello, seconds to sysinfo, peak RSS MB of the agent process during the
    first case, during the second)."""
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        proc = subprocess.Popen(
            ["taskset", "-c", core, sys.executable, str(agent), "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(job(workdir) + "\n")
        proc.stdin.flush()
        seen: dict[str, float] = {}
        peaks = []
        for line in proc.stdout:
            event = json.loads(line)["event"]
            seen.setdefault(event, time.perf_counter() - start)
            if event == "case_start":  # the worker now runs; the agent only waits
                time.sleep(0.3)
                peaks.append(peak_rss_mb(proc.pid))
        proc.wait()
    return seen["hello"], seen["sysinfo"], peaks[0], peaks[1]


def python_once(code: str, core: str) -> tuple[float, float]:
    """(seconds to the first line, peak RSS MB) of `python -c code`."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        ["taskset", "-c", core, sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    proc.stdout.readline()
    seconds = time.perf_counter() - start
    rss = peak_rss_mb(proc.pid)
    proc.stdin.close()
    proc.wait()
    return seconds, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--core", default=str(max(os.sched_getaffinity(0))))
    args = parser.parse_args()
    agent = build_agent().path
    rows: dict[str, list[tuple[float, ...]]] = {k: [] for k in ("agent", "bare", "np", "ort")}
    for _ in range(args.repeats):
        rows["agent"].append(agent_once(agent, args.core))
        rows["bare"].append(python_once(BARE.format("hi"), args.core))
        rows["np"].append(python_once(IMPORTING.format("numpy"), args.core))
        rows["ort"].append(python_once(IMPORTING.format("onnxruntime"), args.core))

    def med(key: str, i: int) -> float:
        return statistics.median(r[i] for r in rows[key])

    hello, facts, agent_rss = med("agent", 0), med("agent", 1), med("agent", 2)
    agent_rss_numpy = med("agent", 3)
    bare_s, bare_rss = med("bare", 0), med("bare", 1)
    print(f"python {sys.version.split()[0]}, core {args.core}, medians of {args.repeats}")
    print(f"start-up to hello:   agent {hello * 1e3:.0f} ms, bare python {bare_s * 1e3:.0f} ms,")
    print(f"                     ratio {hello / bare_s:.2f}")
    print(f"start-up to sysinfo: agent {facts * 1e3:.0f} ms")
    print(f"peak RSS: agent {agent_rss:.1f} MB, bare python {bare_rss:.1f} MB,")
    print(f"          ratio {agent_rss / bare_rss:.2f}")
    print(f"          agent after its first case (numpy loaded) {agent_rss_numpy:.1f} MB,")
    print(f"          ratio {agent_rss_numpy / bare_rss:.2f}")
    print(f"for scale: python + numpy {med('np', 1):.1f} MB,")
    print(f"           python + onnxruntime {med('ort', 1):.1f} MB")


if __name__ == "__main__":
    main()
