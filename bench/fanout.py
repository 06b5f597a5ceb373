"""Fan-out on a lab: `fleet run` and `fleet devices` against fabric doing the same, one run.

On a lab of N real sshd devices (`fleet lab up`), every round runs each side once, a fresh
process each (start-up and imports included, as a user meets them), in an order rotated every
round, so that a change of load on a shared machine hits all sides alike:

- fleet run: `fleet run SUITE --inventory LAB/inventory.yaml --devices lab --store S`, a
  trivial one-case suite (the digits MLP, ONNX FP32, 1 warm-up iteration, 10 timed, 1
  repetition) whose files are already on the devices (an untimed run first); every device must
  store its result. `--checkout DIR` adds the same run of another copy of the source;
- fabric agent job (its baseline): a fresh Python that imports fabric and runs, through one
  `ThreadingGroup`, the very command fleet runs on each device (`<fleet_python>
  <workdir>/agent-<sha12>.pyz serve`) with the very job fleet sends on stdin
  (`fleet.job.build_job`); every device's output must end with `done` after a `result`;
- fleet devices: `fleet devices --inventory LAB/inventory.yaml --devices lab --json`, the
  pre-flight check; every device must come back usable;
- fabric python -c pass (its baseline; issue 12: `fleet devices` <= 1.0x): the same fabric
  process running `<fleet_python> -c pass` on every device (the inventory's interpreter).

fabric checks host keys against the lab's known_hosts (RejectPolicy, not its AutoAddPolicy),
as fleet does. Each lab device has its own workdir, so each connection of the group (a
`Connection` subclass) runs its own device's command and stdin: the fan-out, threads and SSH
handling are fabric's.

Prints, per side, the median wall time, quartiles, the controller process's CPU and peak RSS,
and the CPU the devices used (bench/sessions.py: less disturbed by other work than wall
time); then, per pair, the ratio of the medians and each round's ratio with their median and
range. `--count` also counts, with strace on one device's sshd, what each side starts there.

    python bench/fanout.py --devices 32 --rounds 7 --count
    python bench/fanout.py --lab /tmp/lab32 --rounds 7 --checkout /tmp/before  # a lab already up

Needs fabric, for benches only (`pip install "fabric==3.2.*"`); strace for `--count`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
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
from functools import partial
from pathlib import Path
from typing import Any

from sessions import device_cpu, traced

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "zoo" / "digits_mlp.onnx"
SUITE = {
    "name": "fanout",
    "measure": {"warmup_iterations": 1, "min_iterations": 10, "repetitions": 1},
    "models": [{"name": "digits_mlp", "path": str(MLP), "variants": ["onnx:fp32"]}],
}


def fabric_side(spec_file: Path) -> int:
    """Each device's command with its stdin through one ThreadingGroup (in its own process,
    `--fabric-side SPEC`); checks every device's outcome."""
    import paramiko
    from fabric import Connection, ThreadingGroup

    spec = json.loads(spec_file.read_text())

    class WholeStream(io.StringIO):
        """invoke reads an in_stream that is not a terminal one byte per 10 ms (its
        input_sleep): a 1.3 kB job took 13 s to send. This one hands over all it holds at
        the first read, so the baseline measures the fan-out, not invoke's pacing."""

        def read(self, size: int | None = -1) -> str:
            return super().read()

    class DeviceConnection(Connection):  # type: ignore[misc]
        def __init__(self, device: dict[str, Any]) -> None:
            super().__init__(
                device["host"],
                user=device["user"],
                port=device["port"],
                connect_kwargs={"key_filename": [device["key"]], "look_for_keys": False},
            )
            # fabric sets AutoAddPolicy; fleet checks host keys, so the baseline does too.
            self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
            self.client.load_host_keys(device["known_hosts"])
            self.device = device

        def run(self, command: str, **kwargs: object) -> object:
            stdin = WholeStream(self.device["stdin"])  # "" for `-c pass`: EOF at once
            return super().run(self.device["command"], in_stream=stdin, **kwargs)

    group = ThreadingGroup.from_connections([DeviceConnection(d) for d in spec["devices"]])
    results = group.run("ignored: each connection runs its own", hide=True, warn=True)
    bad = []
    for cxn, result in results.items():
        if spec["expect"] == "agent":
            events = [json.loads(line)["event"] for line in result.stdout.splitlines()]
            if events[-1:] != ["done"] or "result" not in events:
                bad.append(f"{cxn.host}: {events} {result.stderr[-300:]}")
        elif result.exited != 0:
            bad.append(f"{cxn.host}: exit {result.exited} {result.stderr[-300:]}")
    group.close()
    if bad or len(results) != len(spec["devices"]):
        print("fabric side failed:", *bad, sep="\n", file=sys.stderr)
        return 1
    return 0


def fleet_command() -> list[str]:
    """The console script beside this interpreter (what users run), else python -m fleet."""
    script = shutil.which("fleet", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "fleet"]


@contextlib.contextmanager
def lab_for(args: argparse.Namespace, work: Path) -> Iterator[Path]:
    """The lab to use: --lab as it is, or one started here and always stopped again."""
    if args.lab:
        yield args.lab.resolve()
        return
    from fleet import lab as lab_lib

    folder = work / "lab"
    print(f"starting a {args.devices}-device lab in {folder}", file=sys.stderr)
    try:
        lab_lib.up(folder, args.devices)
        yield folder
    finally:
        if (folder / lab_lib.STATE).exists():
            lab_lib.down(folder)


class Timed:
    """Wall time, CPU time and peak RSS of one child process; with `sshd_pids`, the CPU time
    those devices used meanwhile."""

    def __init__(
        self, argv: list[str], env: dict[str, str], cwd: Path | None = None, sshd_pids: Any = ()
    ) -> None:
        devices_before = device_cpu(sshd_pids)
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        # Both pipes read to their end, then wait4: this child's own CPU time and peak RSS.
        out, err = _read_both(proc)
        _, status, usage = os.wait4(proc.pid, 0)
        self.wall = time.perf_counter() - start
        self.cpu = usage.ru_utime + usage.ru_stime
        self.rss_mb = usage.ru_maxrss / 1024
        self.code = os.waitstatus_to_exitcode(status)
        proc.returncode = self.code  # reaped here: Popen must not wait for it again
        self.stdout = out.decode(errors="replace")
        self.stderr = err.decode(errors="replace")
        if sshd_pids:
            time.sleep(0.5)  # a session's last processes are reaped just after the answer
        self.device_cpu = device_cpu(sshd_pids) - devices_before


def _read_both(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """Read stdout and stderr to their end without reaping the process (wait4 does)."""
    assert proc.stdout is not None and proc.stderr is not None
    stderr = proc.stderr
    err: list[bytes] = []
    reader = threading.Thread(target=lambda: err.append(stderr.read()))
    reader.start()
    out = proc.stdout.read()
    reader.join()
    return out, err[0]


class Bench:
    def __init__(self, lab: Path, work: Path) -> None:
        import yaml

        from fleet import lab as lab_lib

        self.lab, self.work = lab, work
        self.inventory = lab / "inventory.yaml"
        self.suite = work / "fanout.yaml"
        self.suite.write_text(yaml.safe_dump(SUITE, sort_keys=False))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_INFLUX_")}
        self.sshd_pids = [d.pid for d in lab_lib.load(lab)]
        self.runs = 0

    def timed(self, argv: list[str], env: dict[str, str] | None = None, cwd: Any = None) -> Timed:
        return Timed(argv, env or self.env, cwd, self.sshd_pids)

    def fleet(self, argv: list[str], checkout: Path | None) -> Timed:
        """This tree's console script, or `python -m fleet` run in another copy of the source
        (its own fleet and agent first on the module path)."""
        if checkout is None:
            return self.timed([*fleet_command(), *argv])
        env = {**self.env, "PYTHONPATH": f"{checkout}:{checkout / 'agents'}"}
        return self.timed([sys.executable, "-m", "fleet", *argv], env, checkout)

    def fleet_run(self, devices: str = "lab", checkout: Path | None = None) -> Timed:
        self.runs += 1
        store = self.work / f"run{self.runs}.sqlite"
        where = ["--inventory", str(self.inventory), "--devices", devices]
        timed = self.fleet(["run", str(self.suite), *where, "--store", str(store)], checkout)
        if timed.code not in (0, 1):
            raise SystemExit(f"fleet run exited {timed.code}:\n{timed.stderr[-3000:]}")
        from fleet.results.store import Store

        results = Store(store).records(measurement="result")
        measured = [r for r in results if r.status != "error"]
        if len(measured) != len(self.selected(devices)):
            raise SystemExit(f"fleet run stored {len(measured)} results:\n{timed.stderr}")
        store.unlink()
        return timed

    def fleet_devices(self, devices: str = "lab", checkout: Path | None = None) -> Timed:
        where = ["--inventory", str(self.inventory), "--devices", devices]
        timed = self.fleet(["devices", *where, "--json"], checkout)
        report = json.loads(timed.stdout or "{}") if timed.code == 0 else {}
        if not report.get("usable") or len(report["devices"]) != len(self.selected(devices)):
            raise SystemExit(f"fleet devices exited {timed.code}:\n{timed.stderr[-3000:]}")
        return timed

    def selected(self, devices: str = "lab") -> list[Any]:
        from fleet.inventory import load_inventory

        return load_inventory(self.inventory).select(devices.split(","))

    def fabric_spec(self, expect: str, devices: str = "lab") -> Path:
        """The fabric side's work: per device, the command and stdin fleet would use (the
        agent and its job), or `<fleet_python> -c pass`, or `true`."""
        from fleet.agent_build import build_agent
        from fleet.job import build_job
        from fleet.plan import make_plan
        from fleet.runner import prepare_artifacts
        from fleet.suite import load_suite

        plan = make_plan(load_suite(self.suite), self.selected(devices))
        artifacts, refused = prepare_artifacts(plan, lambda device, message: None)
        agent = build_agent()
        specs = []
        for index, device_plan in enumerate(plan.devices):
            device = device_plan.device
            argv, stdin = (["true"] if expect == "true" else [device.python, "-c", "pass"]), ""
            if expect == "agent":
                job = build_job(f"fabric-{index}", device_plan, artifacts, refused).job
                argv = [device.python, f"{device.workdir}/{agent.name}", "serve"]
                stdin = json.dumps(job) + "\n"
            specs.append(
                {
                    "host": device.host,
                    "port": device.port,
                    "user": device.user,
                    "key": device.key_file,
                    "known_hosts": str(device.known_hosts),
                    "command": shlex.join(argv),  # as fleet's SSH transport joins it
                    "stdin": stdin,
                }
            )
        path = self.work / f"fabric-{expect}-{devices}.json"
        path.write_text(json.dumps({"expect": expect, "devices": specs}))
        return path

    def fabric(self, spec: Path) -> Timed:
        timed = self.timed([sys.executable, __file__, "--fabric-side", str(spec)])
        if timed.code != 0:
            raise SystemExit(f"fabric side failed:\n{timed.stderr[-3000:]}")
        return timed


class Rebuild(Exception):
    """A timed run pushed a file (someone changed the agent meanwhile): not warm."""


def compare(
    sides: dict[str, Callable[[], Timed]], pairs: list[tuple[str, str]], rounds: int
) -> dict[str, list[Timed]]:
    """Each side once per round, the order rotated every round; each pair's ratio printed."""
    runs: dict[str, list[Timed]] = {label: [] for label in sides}
    order = list(sides)
    for number in range(rounds):
        shift = number % len(order)
        this = {label: sides[label]() for label in order[shift:] + order[:shift]}
        if any("] push " in timed.stderr for timed in this.values()):
            raise Rebuild
        said = ", ".join(f"{a} {this[a].wall / this[b].wall:.2f}" for a, b in pairs)
        walls = ", ".join(f"{label} {this[label].wall:.2f} s" for label in order)
        print(f"  round {number + 1}: {said} ({walls})", file=sys.stderr)
        for label, timed in this.items():
            runs[label].append(timed)
    return runs


def report(runs: dict[str, list[Timed]], pairs: list[tuple[str, str]]) -> None:
    heads = ("median s", "q1", "q3", "cpu s", "rss MB", "dev cpu s")
    print(f"{'':<26}", *(f"{head:>9}" for head in heads))
    for label, timed in runs.items():
        walls = [t.wall for t in timed]
        q1, _, q3 = statistics.quantiles(walls, n=4) if len(walls) > 1 else (walls[0],) * 3
        cpu = statistics.median(t.cpu for t in timed)
        on_devices = statistics.median(t.device_cpu for t in timed)
        rss = max(t.rss_mb for t in timed)
        print(
            f"{label:<26} {statistics.median(walls):9.2f} {q1:9.2f} {q3:9.2f} {cpu:9.2f}"
            f" {rss:9.0f} {on_devices:9.2f}"
        )
    for label, base in pairs:
        medians = [statistics.median(t.wall for t in runs[side]) for side in (label, base)]
        ratios = [a.wall / b.wall for a, b in zip(runs[label], runs[base], strict=True)]
        print(
            f"{label} / {base}: ratio of medians {medians[0] / medians[1]:.2f}; per round"
            f" {', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f},"
            f" range {min(ratios):.2f}-{max(ratios):.2f})"
        )


def sides_for(
    bench: Bench, checkout: Path | None, devices: str = "lab", only: str | None = None
) -> tuple[dict[str, Callable[[], Timed]], list[tuple[str, str]]]:
    """Each fleet command (and the same of the checkout) and its fabric baseline; the pairs."""
    sides: dict[str, Callable[[], Timed]] = {}
    pairs: list[tuple[str, str]] = []
    for name, base, spec in (
        ("fleet run", "fabric agent job", "agent"),
        ("fleet devices", "fabric python -c pass", "python"),
    ):
        if only is None or name.endswith(only):
            fleet_side = bench.fleet_run if spec == "agent" else bench.fleet_devices
            sides[name] = partial(fleet_side, devices)
            pairs.append((name, base))
            if checkout is not None:
                sides[f"{name} @{checkout.name}"] = partial(fleet_side, devices, checkout)
                pairs.append((f"{name} @{checkout.name}", base))
            sides[base] = partial(bench.fabric, bench.fabric_spec(spec, devices))
    return sides, pairs


def count_processes(bench: Bench, checkout: Path | None) -> None:
    sides = sides_for(bench, checkout, "lab1")[0]
    sides["fabric true"] = partial(bench.fabric, bench.fabric_spec("true", "lab1"))
    print("\nprocesses started on one device (lab1) by one run, strace -f on its sshd:")
    for label, side in sides.items():
        side()  # untimed: pushes what this side's agent needs, outside the count
        trace = traced(bench.sshd_pids[0], bench.lab / "strace-lab1.log", side)
        print(f"  {label}: {trace.describe()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--devices", type=int, default=32, help="lab size (default: 32)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (default: 7)")
    parser.add_argument("--lab", type=Path, help="use this lab (already up; left up)")
    parser.add_argument(
        "--checkout", type=Path, help="also time both fleet commands of another source copy"
    )
    parser.add_argument("--count", action="store_true", help="count processes per session")
    parser.add_argument("--only", choices=("run", "devices"), help="one comparison only")
    parser.add_argument("--fabric-side", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fabric_side:
        return fabric_side(args.fabric_side)

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; load {load}")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a socket and pipes per device
    checkout = args.checkout.resolve() if args.checkout else None
    with tempfile.TemporaryDirectory() as tmp, lab_for(args, Path(tmp)) as lab:
        bench = Bench(lab, Path(tmp))
        sides, pairs = sides_for(bench, checkout, only=args.only)
        print(f"{len(bench.selected())} devices, {args.rounds} rounds", file=sys.stderr)
        for _attempt in range(3):
            for side in sides.values():
                side()  # untimed: each side's files (agents differ by checkout) on the devices
            try:
                runs = compare(sides, pairs, args.rounds)
                break
            except Rebuild:
                print("  a timed run pushed a file: warming up again", file=sys.stderr)
        else:
            raise SystemExit("the agent kept changing under the bench")
        print(f"\n{len(bench.selected())} lab devices, {args.rounds} rounds:")
        report(runs, pairs)
        if args.count:
            count_processes(bench, checkout)
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
