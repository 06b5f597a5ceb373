"""How long `fleet --help` takes, against `python -c pass` (the interpreter's own start-up).

Each round runs every command once, in turn, as a fresh process with its output discarded;
the rounds alternate the order, so that a change of load on a shared machine hits all of
them. Prints each command's median wall time and quartiles, its difference and ratio to the
baseline's median, and its median CPU time (user + system), which a busy machine disturbs
less. Target (issue 14): `fleet --help` in <= 0.3 s.

    python bench/cli_startup.py --repeats 30 [--checkout DIR]

`--checkout DIR` also times `python -m fleet --help` run in another copy of the source (say,
an older commit: `git archive COMMIT | tar -x -C DIR`): the folder a command runs in comes
first on the module path, before the installed fleet.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 0.3


Command = tuple[list[str], dict[str, str], Path]  # argv, environment, folder


def commands(checkouts: list[Path]) -> dict[str, Command]:
    """By label. The console script is the one beside this interpreter (not a pyenv shim)."""
    env, here = dict(os.environ), Path.cwd()
    found = {
        "python -c pass (baseline)": ([sys.executable, "-c", "pass"], env, here),
        "python -m fleet --help": ([sys.executable, "-m", "fleet", "--help"], env, here),
    }
    script = shutil.which("fleet", path=str(Path(sys.executable).parent))
    if script:
        found["fleet --help"] = ([script, "--help"], env, here)
    for checkout in checkouts:
        found[f"{checkout.name}: python -m fleet --help"] = (
            [sys.executable, "-m", "fleet", "--help"],
            {**env, "PYTHONPATH": str(checkout / "agents")},  # its own agent package too
            checkout,
        )
    return found


def once(command: Command) -> tuple[float, float]:
    """Wall time and CPU time of one run, in seconds."""
    argv, env, folder = command
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=folder, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, cpu.ru_utime + cpu.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="rounds (default: 30)")
    parser.add_argument(
        "--checkout",
        type=Path,
        action="append",
        default=[],
        help="another source copy (repeatable)",
    )
    args = parser.parse_args()
    runs = commands([c.resolve() for c in args.checkout])
    times: dict[str, list[float]] = {label: [] for label in runs}
    cpu: dict[str, list[float]] = {label: [] for label in runs}
    for command in runs.values():  # once untimed: fills the OS's file cache
        once(command)
    labels = list(runs)
    for round_ in range(args.repeats):
        for label in labels if round_ % 2 == 0 else labels[::-1]:
            wall, used = once(runs[label])
            times[label].append(wall)
            cpu[label].append(used)

    base = statistics.median(times[labels[0]])
    print(f"{args.repeats} rounds; Python {sys.version.split()[0]}; load {os.getloadavg()[0]:.2f}")
    print(
        f"{'seconds':<40} {'median':>7} {'q1':>7} {'q3':>7} {'- base':>7} {'/ base':>7} {'cpu':>7}"
    )
    for label, values in times.items():
        median = statistics.median(values)
        q1, _, q3 = statistics.quantiles(values, n=4)
        print(
            f"{label:<40} {median:7.3f} {q1:7.3f} {q3:7.3f} {median - base:7.3f}"
            f" {median / base:7.2f} {statistics.median(cpu[label]):7.3f}"
        )
    for label in labels[1:]:
        verdict = "meets" if statistics.median(times[label]) <= TARGET_S else "misses"
        print(f"{label}: {verdict} the target of {TARGET_S} s")


if __name__ == "__main__":
    main()
