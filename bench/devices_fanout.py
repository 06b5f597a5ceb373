"""`fleet devices` on a lab against fabric's ThreadingGroup running `<python> -c pass`.

The pre-flight check should cost no more than the barest fan-out there is: one SSH
connection per device and one Python start on it (issue 12: `fleet devices` on 32 lab
devices <= 1.0x fabric running `python3 -c pass`). On a lab of N real sshd devices
(`fleet lab up`), alternating pair after pair, each side a fresh process (start-up and
imports included, as a user meets them):

- fleet: `fleet devices --inventory LAB/inventory.yaml --devices lab --json`; every device
  must come back usable;
- fabric (the baseline): a fresh Python that imports fabric and runs `<fleet_python> -c pass`
  (the device's interpreter from the inventory: `python3` on PATH may be a slow shim) on every
  device through one `ThreadingGroup`, host keys checked against the lab's known_hosts
  (fabric's AutoAddPolicy replaced by RejectPolicy, as fleet checks them); every device must
  exit 0.

Then, in this process and without start-up costs, the same two fan-outs once more side by
side: `fleet.preflight.check_devices` against a `ThreadingGroup.run`, and a bare paramiko
loop (a thread per device: connect, exec, exit status) as the floor of any SSH fan-out.

Prints the medians, quartiles, median CPU of the controller process and the ratio of the
medians (and per pair).

    python bench/devices_fanout.py --devices 32 --pairs 7
    python bench/devices_fanout.py --lab /tmp/lab32 --pairs 7    # a lab already up (left up)

Needs fabric (`pip install "fabric==3.2.*"`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

FABRIC_LABEL = "fabric python -c pass"
SSHD_PIDS: list[int] = []  # the lab's sshds, whose CPU time is the devices'


def lab_devices(inventory: Path) -> list[dict[str, Any]]:
    """How to reach each lab device, and its interpreter: from fleet's own inventory reader."""
    from fleet.inventory import load_inventory

    return [
        {
            "host": d.host,
            "port": d.port,
            "user": d.user,
            "key": d.key_file,
            "known_hosts": str(d.known_hosts),
            "command": shlex.join([d.python, "-c", "pass"]),  # as fleet's transport joins argv
        }
        for d in load_inventory(inventory).select(["lab"])
    ]


def fabric_group(devices: list[dict[str, Any]]) -> Any:
    import paramiko
    from fabric import Connection, ThreadingGroup

    connections = []
    for device in devices:
        connection = Connection(
            device["host"],
            user=device["user"],
            port=device["port"],
            connect_kwargs={"key_filename": [device["key"]], "look_for_keys": False},
        )
        # fabric sets AutoAddPolicy; fleet checks host keys, so the baseline does too.
        connection.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        connection.client.load_host_keys(device["known_hosts"])
        connections.append(connection)
    return ThreadingGroup.from_connections(connections)


def fabric_run(devices: list[dict[str, Any]]) -> None:
    """Every device's `python -c pass` through one ThreadingGroup; every one must exit 0."""
    group = fabric_group(devices)
    # One command for the group: the lab's devices share one interpreter path.
    commands = {d["command"] for d in devices}
    assert len(commands) == 1, f"devices with different interpreters: {commands}"
    results = group.run(commands.pop(), hide=True, warn=True)
    group.close()
    failed = [f"{c.host}:{c.port} exit {r.exited}" for c, r in results.items() if r.exited]
    if failed or len(results) != len(devices):
        raise SystemExit(f"fabric side failed: {failed or 'devices missing'}")


def paramiko_run(devices: list[dict[str, Any]]) -> None:
    """The floor: a thread per device, connect, exec, wait for the exit status, close."""
    import paramiko

    codes: list[int] = []

    def one(device: dict[str, Any]) -> None:
        client = paramiko.SSHClient()
        client.load_host_keys(device["known_hosts"])
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            device["host"],
            port=device["port"],
            username=device["user"],
            key_filename=device["key"],
            look_for_keys=False,
        )
        channel = client.get_transport().open_session()  # type: ignore[union-attr]
        channel.exec_command(device["command"])
        codes.append(channel.recv_exit_status())
        client.close()

    threads = [threading.Thread(target=one, args=(d,)) for d in devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if codes != [0] * len(devices):
        raise SystemExit(f"paramiko loop failed: exit codes {codes}")


def device_cpu(sshd_pids: list[int]) -> float:
    """CPU seconds the lab's devices have used: each sshd's own and its reaped descendants'
    (every session, shell and Python it started), from /proc/PID/stat. Less disturbed by
    other work on a shared machine than wall time."""
    ticks = 0
    for pid in sshd_pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


class Timed:
    """Wall time and CPU time (user + system) of one child process run to its end, and the
    CPU time the devices used meanwhile."""

    def __init__(self, argv: list[str]) -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        devices_before = device_cpu(SSHD_PIDS)
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        self.wall = time.perf_counter() - start
        time.sleep(0.5)  # the sessions' last processes are reaped just after the answer
        self.device_cpu = device_cpu(SSHD_PIDS) - devices_before
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        self.code, self.stdout, self.stderr = done.returncode, done.stdout, done.stderr


def fleet_command() -> list[str]:
    """The console script beside this interpreter (what users run), else python -m fleet."""
    script = shutil.which("fleet", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "fleet"]


def fleet_devices(inventory: Path, count: int) -> Timed:
    argv = [*fleet_command(), "devices", "--inventory", str(inventory), "--devices", "lab"]
    timed = Timed([*argv, "--json"])
    if timed.code != 0:
        raise SystemExit(f"fleet devices exited {timed.code}:\n{timed.stderr[-3000:]}")
    report = json.loads(timed.stdout)
    assert report["usable"] and len(report["devices"]) == count, report
    return timed


def fabric_side(spec: Path) -> Timed:
    timed = Timed([sys.executable, __file__, "--fabric-side", str(spec)])
    if timed.code != 0:
        raise SystemExit(f"fabric side failed:\n{timed.stderr[-3000:]}")
    return timed


def compare(pairs: int, sides: list[tuple[str, Callable[[], Timed]]]) -> dict[str, list[Timed]]:
    """Alternate the two, pair after pair; which goes first changes every pair."""
    runs: dict[str, list[Timed]] = {name: [] for name, _ in sides}
    for done in range(pairs):
        for name, side in sides if done % 2 == 0 else sides[::-1]:
            runs[name].append(side())
        (a, ta), (b, tb) = ((n, runs[n][-1].wall) for n, _ in sides)
        print(f"  pair {done + 1}: {a} {ta:.2f} s, {b} {tb:.2f} s, ratio {ta / tb:.2f}")
    return runs


def report(runs: dict[str, list[Timed]], base_label: str) -> None:
    label = next(name for name in runs if name != base_label)
    base = statistics.median(t.wall for t in runs[base_label])
    print(
        f"{'':<24} {'median s':>9} {'q1':>6} {'q3':>6} {'/ base':>7} {'cpu s':>6}"
        f" {'device cpu s':>13}"
    )
    for name in (label, base_label):
        walls = [t.wall for t in runs[name]]
        q1, _, q3 = statistics.quantiles(walls, n=4) if len(walls) > 1 else (walls[0],) * 3
        median = statistics.median(walls)
        cpu = statistics.median(t.cpu for t in runs[name])
        on_devices = statistics.median(t.device_cpu for t in runs[name])
        print(
            f"{name:<24} {median:9.2f} {q1:6.2f} {q3:6.2f} {median / base:7.2f} {cpu:6.2f}"
            f" {on_devices:13.2f}"
        )
    per_pair = [a.wall / b.wall for a, b in zip(runs[label], runs[base_label], strict=True)]
    print(
        f"ratio of medians {statistics.median(t.wall for t in runs[label]) / base:.2f};"
        f" per pair: {', '.join(f'{r:.2f}' for r in per_pair)}"
        f" (median {statistics.median(per_pair):.2f})"
    )


def in_process(inventory: Path, devices: list[dict[str, Any]], repeats: int) -> None:
    """The fan-outs alone, start-up and imports excluded, alternating."""
    import fabric  # noqa: F401 - imported before timing, as fleet's modules are below

    from fleet.inventory import load_inventory
    from fleet.preflight import check_devices

    selected = load_inventory(inventory).select(["lab"])
    sides: dict[str, Callable[[], object]] = {
        "fleet check_devices": lambda: check_devices(selected),
        "fabric ThreadingGroup": lambda: fabric_run(devices),
        "paramiko threads": lambda: paramiko_run(devices),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    order = list(sides)
    for index in range(repeats):
        for name in order[index % 3 :] + order[: index % 3]:
            devices_before = device_cpu(SSHD_PIDS)
            start = time.perf_counter()
            outcome = sides[name]()
            times[name].append(time.perf_counter() - start)
            time.sleep(0.5)
            cpu[name].append(device_cpu(SSHD_PIDS) - devices_before)
            if name.startswith("fleet"):
                assert all(c.usable for c in outcome), outcome  # type: ignore[attr-defined]
    base = statistics.median(times["fabric ThreadingGroup"])
    print(f"\nin this process, {repeats} times each (no start-up, no imports):")
    for name, walls in times.items():
        median = statistics.median(walls)
        on_devices = statistics.median(cpu[name])
        print(
            f"  {name:<24} median {median:.2f} s ({median / base:.2f} of fabric),"
            f" device CPU {on_devices:.2f} s"
        )


@contextlib.contextmanager
def lab_for(args: argparse.Namespace, work: Path) -> Iterator[Path]:
    """The lab to use: --lab as it is, or one started here and always stopped again."""
    if args.lab:
        yield args.lab.resolve()
        return
    from fleet import lab as lab_lib

    folder = work / "lab"
    print(f"starting a {args.devices}-device lab in {folder}")
    try:
        lab_lib.up(folder, args.devices)
        yield folder
    finally:
        if (folder / lab_lib.STATE).exists():
            lab_lib.down(folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--devices", type=int, default=32, help="lab size (default: 32)")
    parser.add_argument("--pairs", type=int, default=7, help="alternating pairs (default: 7)")
    parser.add_argument("--lab", type=Path, help="use this lab (already up) instead")
    parser.add_argument(
        "--in-process", type=int, default=5, help="repeats of the in-process fan-outs (0: none)"
    )
    parser.add_argument("--fabric-side", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fabric_side:
        fabric_run(json.loads(args.fabric_side.read_text()))
        return 0

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; load {load}")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp, lab_for(args, Path(tmp)) as lab:
        from fleet import lab as lab_lib

        SSHD_PIDS[:] = [d.pid for d in lab_lib.load(lab)]
        inventory = lab / "inventory.yaml"
        devices = lab_devices(inventory)
        spec = Path(tmp) / "fabric.json"
        spec.write_text(json.dumps(devices))
        fleet_devices(inventory, len(devices))  # untimed: warms the page cache, builds the agent
        fabric_side(spec)
        print(f"{len(devices)} devices, {args.pairs} pairs, fresh processes:")
        runs = compare(
            args.pairs,
            [
                ("fleet devices", lambda: fleet_devices(inventory, len(devices))),
                (FABRIC_LABEL, lambda: fabric_side(spec)),
            ],
        )
        print(f"\n`fleet devices` on {len(devices)} lab devices vs fabric `python -c pass`:")
        report(runs, FABRIC_LABEL)
        if args.in_process:
            in_process(inventory, devices, args.in_process)
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
