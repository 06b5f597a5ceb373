"""Scale: one `fleet run` over N lab devices; every result stored, the controller's peak RSS
and its CPU time per device.

Starts a lab of N real sshd devices (`fleet.lab.up`, in labs of at most 200: see LAB_MAX;
always stopped again, and checked that no sshd of it is left), writes the trivial one-case
suite of bench/fanout.py (the digits MLP, ONNX FP32, 1 warm-up iteration, 10 timed, 1
repetition) and runs the CLI, a fresh process:

    fleet run SUITE --inventory LAB/inventory.yaml --devices lab --parallel P --store S

`--checkout DIR` follows each run with the same run of another copy of the source (say, the
code before a change: its agent is another file, so its first run sends that too). `--runs 2`
runs it twice: the first run sends the agent and the model to every device (cold),
the second finds them there (warm). For each run it prints the wall time, the controller's
peak RSS (ru_maxrss of the controller process, from wait4) and its CPU time (user + system)
in all and per device, and checks that the store holds one result per device, none of them
an error. The controller's fixed start-up (`fleet run --plan` on the same selection: imports,
suite, inventory, plan) is printed too, so the per-device share can be told from it.

Goal (issue 12): 512 devices, every result stored, peak RSS <= 400 MB, CPU <= 30 ms per
device. On a 2-core machine the devices (sshd, a login shell, the agent and a worker with
onnxruntime each) need the cores far more than the controller: cap `--parallel`.

    python bench/scale.py --devices 128 --parallel 16            # the short form
    python bench/scale.py --devices 512 --parallel 16 --runs 2   # the full measurement
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from fanout import SUITE, Timed, fleet_command

RSS_GOAL_MB = 400.0
CPU_GOAL_MS = 30.0


# `fleet lab up` puts device i on 127.0.0.(10 + i): past 245 devices that is no address. A
# larger lab is made of several labs of at most this many (each from 127.0.0.11, each sshd on
# its own port) under one inventory and one known_hosts.
LAB_MAX = 200


def labs_up(folder: Path, count: int) -> list[Path]:
    """Start `count` devices as labs of at most LAB_MAX under `folder`; write one inventory
    (group `lab`, devices lab1..labN) and one known_hosts for them all."""
    from fleet import lab as lab_lib

    hosts: dict[str, object] = {}
    known: list[str] = []
    parts: list[Path] = []
    try:
        for offset in range(0, count, LAB_MAX):
            part = folder / f"part{offset // LAB_MAX + 1}"
            parts.append(part)
            lab_lib.up(part, min(LAB_MAX, count - offset))
            inventory = yaml.safe_load((part / "inventory.yaml").read_text())
            for name, host in inventory["all"]["children"]["lab"]["hosts"].items():
                hosts[f"lab{offset + int(name.removeprefix('lab'))}"] = host
            known += (part / "known_hosts").read_text().splitlines()
    except BaseException:
        labs_down(parts)
        raise
    lab = {"all": {"children": {"lab": {"hosts": hosts}}}}
    (folder / "inventory.yaml").write_text(yaml.safe_dump(lab, sort_keys=False))
    (folder / "known_hosts").write_text("\n".join(known) + "\n")
    return parts


def labs_down(parts: list[Path]) -> None:
    from fleet import lab as lab_lib

    for part in parts:
        if (part / lab_lib.STATE).exists():
            lab_lib.down(part)


def leftover_sshd(lab: Path) -> list[str]:
    """sshd processes still running a config of this lab (none after `lab down`)."""
    found = subprocess.run(
        ["pgrep", "-af", f"{lab}/.*sshd_config"], capture_output=True, text=True
    ).stdout
    return found.splitlines()


def leftover_agents(lab: Path) -> list[str]:
    found = subprocess.run(
        ["pgrep", "-af", f"{lab}/.*/agent-.*[.]pyz (serve|worker)"], capture_output=True, text=True
    ).stdout
    return found.splitlines()


def report(label: str, timed: Timed, store: Any, devices: int, plan: Timed) -> bool:
    """Print one run's figures; whether it met the goals."""
    results = store.records(measurement="result")
    statuses = collections.Counter(str(r.fields.get("error_kind") or r.status) for r in results)
    pushes = timed.stderr.count("] push ")
    stored = len(results) == devices and not any(r.status == "error" for r in results)
    per_device_ms = timed.cpu / devices * 1000
    marginal_ms = (timed.cpu - plan.cpu) / devices * 1000
    print(
        f"{label} ({'cold' if pushes else 'warm'}: {pushes} files pushed): exit {timed.code},"
        f" {timed.wall:.0f} s; {len(results)} results stored of {devices} ({dict(statuses)})\n"
        f"  controller peak RSS {timed.rss_mb:.0f} MB (goal <= {RSS_GOAL_MB:g});"
        f" CPU {timed.cpu:.2f} s = {per_device_ms:.1f} ms per device"
        f" (goal <= {CPU_GOAL_MS:g}; {marginal_ms:.1f} ms beyond start-up)"
    )
    if not stored:
        print(timed.stderr[-3000:])
    return stored and timed.rss_mb <= RSS_GOAL_MB and per_device_ms <= CPU_GOAL_MS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=128, help="lab size (default: 128)")
    parser.add_argument("--parallel", type=int, default=16, help="fleet run --parallel")
    parser.add_argument("--runs", type=int, default=1, help="runs (1: cold only; 2: and warm)")
    parser.add_argument("--dir", type=Path, help="lab folder (default: a temporary one)")
    parser.add_argument(
        "--checkout", type=Path, help="after each run, the same with another source copy"
    )
    args = parser.parse_args()

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # sockets and pipes per device
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_INFLUX_")}
    print(
        f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; open files {hard};"
        f" load {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    from fleet.results.store import Store

    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = (args.dir or work / "lab").resolve()
        suite = work / "scale.yaml"
        suite.write_text(yaml.safe_dump(SUITE, sort_keys=False))
        started = time.perf_counter()
        folder.mkdir(parents=True, exist_ok=True)
        parts: list[Path] = []
        try:
            parts = labs_up(folder, args.devices)
            print(f"lab of {args.devices} devices up in {time.perf_counter() - started:.0f} s")
            inventory = ["--inventory", str(folder / "inventory.yaml"), "--devices", "lab"]
            plan = Timed([*fleet_command(), "run", str(suite), *inventory, "--plan"], env)
            print(
                f"start-up alone (fleet run --plan): {plan.wall:.2f} s, CPU {plan.cpu:.2f} s,"
                f" peak RSS {plan.rss_mb:.0f} MB"
            )
            sides: list[tuple[str, Path | None]] = [("fleet run", None)]
            if args.checkout:
                sides.append((f"fleet run @{args.checkout.name}", args.checkout.resolve()))
            for number in range(1, args.runs + 1):
                for side, (label, checkout) in enumerate(sides):
                    store = work / f"run{number}-{side}.sqlite"
                    argv = ["run", str(suite), *inventory]
                    argv += ["--parallel", str(args.parallel), "--store", str(store)]
                    if checkout is None:
                        timed = Timed([*fleet_command(), *argv], env)
                    else:  # another source copy: its own fleet and agent first on the path
                        path = {"PYTHONPATH": f"{checkout}:{checkout / 'agents'}"}
                        timed = Timed([sys.executable, "-m", "fleet", *argv], env | path, checkout)
                    met = report(f"{label}, run {number}", timed, Store(store), args.devices, plan)
                    ok &= met or checkout is not None  # the goals are this tree's
            left = leftover_agents(folder)
            print(f"agents left on the devices after the runs: {len(left)}")
            ok &= not left
        finally:
            labs_down(parts)
            left = leftover_sshd(folder)
            print(f"lab down; sshd of this lab left: {len(left)}")
            ok &= not left
    print("goals met" if ok else "goals NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
