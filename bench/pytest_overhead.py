"""The pytest plugin's overhead: the same cases through `pytest -n P` and `fleet run --parallel P`.

On a lab of N real sshd devices (`fleet lab up`), each round runs both sides once, a fresh
process each (start-up, imports and pytest-xdist's workers included, as a user meets them), in
an order that rotates every round so that a change of load on a shared machine hits all:

- fleet run (the baseline): `fleet run SUITE --inventory LAB/inventory.yaml --devices lab
  --parallel P --store S`, a suite of three cases (digits MLP and digits CNN in ONNX FP32, the
  CNN in ONNX INT8), measured as suites/smoke.yaml measures (20 warm-up iterations and 0.5 s,
  300 timed, 3 repetitions); every device must store its three results;
- pytest: `pytest test_cases.py --fleet-inventory LAB/inventory.yaml --fleet-devices lab -n P
  --fleet-store S`, one test parametrized over the same three cases, each calling
  `fleet_device.run_case(SUITE, model, variant)`: the same cases, settings and devices, each
  test its own run (its own agent start and device lock) over one SSH connection per device
  and worker, the devices spread over P workers by the plugin (`--dist loadgroup`); every
  test must pass and store its result;
- pytest, tests that measure nothing: the same command and parametrization, each test only
  asking for `fleet_device`: what pytest, pytest-xdist's workers and the plugin cost before
  any device work.

Validity limits are relaxed in the suite (a lab shares this machine's cores): both sides do the
same work whatever the noise, and no test fails on it. One untimed `fleet run` first sends the
agent and the artifacts to every device. Prints each side's median wall time, quartiles and the
CPU its controller processes used (pytest and its workers, or fleet); the ratio of the medians and
each round's ratio (issue 11's goal: pytest <= 1.2x); what every run pays before its first
case (from its start to its device's sysinfo in the store: connection, agent start, probes),
which pytest pays once per test and `fleet run` once per device; the SSH logins each side
made (counted in the lab's sshd logs: one per device for both, the plugin keeping each
device's connection for its worker's session); and what one SSH connection costs, what a
test would pay again without that.

    python bench/pytest_overhead.py --devices 8 --rounds 5
    python bench/pytest_overhead.py --lab /tmp/lab8 --rounds 5   # a lab already up

Run it as Python runs by default, writing bytecode: with PYTHONDONTWRITEBYTECODE set (as in
some containers) each pytest process compiles and rewrites its plugins' modules again, which
multiplied the tests-that-measure-nothing side by four here (the bench says so when it is set).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo"
CASES = [("digits_mlp", "onnx:fp32"), ("digits_cnn", "onnx:fp32"), ("digits_cnn", "onnx:int8")]
SUITE = {
    "name": "pytest-overhead",
    "measure": {
        "warmup_iterations": 20,
        "warmup_seconds": 0.5,
        "min_iterations": 300,
        "max_seconds": 20,
        "repetitions": 3,
        # a lab shares the machine's cores: keep every result, noisy or not
        "cpu_wait_max": 1,
        "cv_max": 1000,
        "drift_max": 1000,
        "repetition_cv_max": 1000,
    },
    "models": [
        {"name": "digits_mlp", "path": str(ZOO / "digits_mlp.onnx"), "variants": ["onnx:fp32"]},
        {
            "name": "digits_cnn",
            "path": str(ZOO / "digits_cnn.onnx"),
            "calibration": str(ZOO / "digits_cnn_calib.npz"),
            "variants": ["onnx:fp32", "onnx:int8"],
        },
    ],
}
FLEET, PYTEST, EMPTY_SIDE = "fleet run", "pytest", "pytest, tests that measure nothing"
TESTS = """\
import pytest

SUITE = {suite!r}


@pytest.mark.parametrize(("model", "variant"), {cases!r})
def test_case(fleet_device, model, variant):
    fleet_device.run_case(SUITE, model, variant)
"""
# The same tests, devices and workers, measuring nothing: what pytest and xdist cost alone.
EMPTY = """\
import pytest


@pytest.mark.parametrize(("model", "variant"), {cases!r})
def test_case(fleet_device, model, variant):
    assert fleet_device.name
"""


@contextlib.contextmanager
def lab(devices: int, existing: Path | None) -> Iterator[Path]:
    from fleet import lab as lab_lib

    if existing is not None:
        yield existing
        return
    folder = Path(tempfile.mkdtemp(prefix="pytest-overhead-")) / "lab"
    lab_lib.up(folder, devices)
    try:
        yield folder
    finally:
        lab_lib.down(folder)
        shutil.rmtree(folder.parent, ignore_errors=True)


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds, and CPU seconds of the process and its children on this side (the
    controller: pytest and its workers, or fleet; not the devices' sshd sessions)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(
            f"{argv[:4]} exited {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return seconds, cpu


def stored(store: Path, parallel: int) -> tuple[int, list[float]]:
    """The results stored, and for each run the time from its start to a device's sysinfo
    (connection, agent start and probes: what a device pays before its first case). In a run
    of several devices only the first `parallel` count: the others waited for a turn."""
    from fleet.results.store import Store

    db = Store(store)
    try:
        results = len(db.records(measurement="result"))
        sysinfo: dict[str, list[int]] = {}
        for record in db.records(measurement="device"):
            sysinfo.setdefault(record.run_id, []).append(record.time_ns)
        starts = []
        for run in db.runs():
            times = sorted(sysinfo.get(run.run_id, []))[:parallel]
            starts += [(t - run.started_ns) / 1e9 for t in times]
        return results, starts
    finally:
        db.close()


def logins(lab: Path, devices: list[str]) -> int:
    """SSH logins the lab's sshds accepted so far: one per connection."""
    return sum((lab / d / "sshd.log").read_text().count("Accepted publickey") for d in devices)


def connect_cost(inventory: Path, times: int = 20) -> float:
    """Median seconds of one SSH connection (open and close) to the first lab device."""
    from fleet.inventory import load_inventory
    from fleet.transport import connect

    device = load_inventory(inventory).select(["lab"])[0]
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        connect(device).close()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--lab", type=Path, default=None, help="a lab already up (its folder)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pytest-overhead-work-"))
    try:
        measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path) -> None:
    suite = work / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    (work / "test_cases.py").write_text(TESTS.format(suite=str(suite), cases=CASES))
    (work / "test_empty.py").write_text(EMPTY.format(cases=CASES))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_INFLUX", "FLEET_INV"))}
    env["FLEET_HOME"] = str(work / "home")
    with lab(args.devices, args.lab) as folder:
        inventory = folder / "inventory.yaml"
        hosts = list(yaml.safe_load(inventory.read_text())["all"]["children"]["lab"]["hosts"])
        devices = len(hosts)
        expected = devices * len(CASES)

        def fleet_run(store: Path) -> list[str]:
            return [
                *(sys.executable, "-m", "fleet", "run", str(suite)),
                *("--inventory", str(inventory), "--devices", "lab"),
                *("--parallel", str(args.parallel), "--store", str(store)),
            ]

        def pytest_run(tests: str) -> Callable[[Path], list[str]]:
            def argv(store: Path) -> list[str]:
                return [
                    *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"),
                    *(tests, "--fleet-inventory", str(inventory), "--fleet-devices", "lab"),
                    *("-n", str(args.parallel), "--fleet-store", str(store)),
                ]

            return argv

        sides = {
            FLEET: fleet_run,
            PYTEST: pytest_run("test_cases.py"),
            EMPTY_SIDE: pytest_run("test_empty.py"),
        }
        print(f"lab: {devices} devices; {len(CASES)} cases each; parallel {args.parallel}")
        print(f"load average at the start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
        if os.environ.get("PYTHONDONTWRITEBYTECODE"):
            # Then pytest rewrites the asserts of every plugin module in each of its processes
            # again (hypothesis alone: 1.3 s of CPU each), which a user's machine caches.
            print("PYTHONDONTWRITEBYTECODE is set: every pytest process compiles its plugins")
        # Untimed: the agent and the artifacts onto the devices, where both sides find them.
        timed(fleet_run(work / "warm.sqlite"), work, env)
        wall: dict[str, list[float]] = {name: [] for name in sides}
        cpu: dict[str, list[float]] = {name: [] for name in sides}
        starts: dict[str, list[float]] = {name: [] for name in sides}
        logged_in: dict[str, list[int]] = {name: [] for name in sides}
        for round_ in range(args.rounds):
            names = list(sides)
            order = names[round_ % 3 :] + names[: round_ % 3]  # each side first in turn
            for name in order:
                store = work / f"r{round_}-{name.split()[0]}-{len(name)}.sqlite"
                before = logins(folder, hosts)
                seconds, used = timed(sides[name](store), work, env)
                logged_in[name].append(logins(folder, hosts) - before)
                wall[name].append(seconds)
                cpu[name].append(used)
                found, run_starts = stored(store, args.parallel)
                starts[name] += run_starts
                if name != EMPTY_SIDE and found != expected:
                    raise SystemExit(f"{name}: {found} results stored, expected {expected}")
            print(
                f"round {round_ + 1}: "
                + ", ".join(f"{name} {wall[name][-1]:.1f} s" for name in sides)
                + f"; pytest / fleet run {wall[PYTEST][-1] / wall[FLEET][-1]:.2f}"
            )
        connect_s = connect_cost(inventory)

    print()
    print(f"{'side':28} {'wall s (median)':>15} {'quartiles':>11} {'controller CPU s':>16}")
    for name, values in wall.items():
        q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        print(
            f"{name:28} {statistics.median(values):15.1f} {q[0]:5.1f}-{q[2]:<5.1f}"
            f" {statistics.median(cpu[name]):16.1f}"
        )
    ratios = [p / f for p, f in zip(wall[PYTEST], wall[FLEET], strict=True)]
    medians = statistics.median(wall[PYTEST]) / statistics.median(wall[FLEET])
    print(
        f"pytest / fleet run: {medians:.2f} (medians); each round: "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + f"; median {statistics.median(ratios):.2f}"
    )
    for name in (FLEET, PYTEST):
        print(
            f"{name}: {statistics.median(starts[name]):.2f} s (median) from a run's start to a"
            f" device's sysinfo (connect, agent start, probes), paid"
            f" {'once per device' if name == FLEET else 'once per test'}"
        )
    print(
        "SSH logins per run: "
        + ", ".join(f"{name} {statistics.median(logged_in[name]):g}" for name in (FLEET, PYTEST))
        + f" ({devices} devices, {devices * len(CASES)} tests)"
    )
    print(f"one SSH connection (open + close): {connect_s * 1000:.0f} ms (median of 20)")


if __name__ == "__main__":
    main()
