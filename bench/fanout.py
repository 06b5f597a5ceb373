"""Fan-out: a warm `fleet run` on a lab against fabric's ThreadingGroup running the same job.

On a lab of N real sshd devices (`fleet lab up`), with a trivial one-case suite (the digits
MLP, ONNX FP32, 1 warm-up iteration, 10 timed, 1 repetition) whose files are already on the
devices (an untimed `fleet run` first), it times, alternating pair after pair:

- fleet: `fleet run SUITE --inventory LAB/inventory.yaml --devices lab --store S` (the CLI,
  a fresh process, a fresh store each time: what a user runs);
- fabric (the baseline): a fresh Python process that imports fabric and runs, through one
  `ThreadingGroup` over the same devices, the very command fleet runs on each device
  (`<fleet_python> <workdir>/agent-<sha12>.pyz serve`) with the very job fleet sends it on
  stdin (built by fleet's own `fleet.job.build_job`, as bench/benchjob.py does), host keys
  checked against the lab's known_hosts (fabric's AutoAddPolicy replaced by RejectPolicy).
  It checks every device's output ends with `done` after a `result`.

A ThreadingGroup runs one command with one stdin on every host; here each device has its own
workdir, so each connection of the group (a `Connection` subclass) runs its own device's
command and job: the fan-out, threads and SSH handling are fabric's own.

When `fleet devices` exists (fleet/cli/devices.py), it is timed the same way against fabric
running `<fleet_python> -c pass` on every device.

Prints each side's median wall time, quartiles, median controller CPU (user + system of the
controller process) and peak RSS, and the ratio of the medians (and its median per pair).
`--count` also counts, with strace attached to one device's sshd, the processes each side
starts on the device for one session (forks, and the programs exec'd).

    python bench/fanout.py --devices 32 --rounds 7 --count
    python bench/fanout.py --lab /tmp/lab --rounds 5 --checkout /tmp/before  # a lab already up

Needs fabric (`pip install "fabric==3.2.*"`); strace for `--count`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "zoo" / "digits_mlp.onnx"
SUITE = {
    "name": "fanout",
    "measure": {"warmup_iterations": 1, "min_iterations": 10, "repetitions": 1},
    "models": [{"name": "digits_mlp", "path": str(MLP), "variants": ["onnx:fp32"]}],
}


# --- the fabric side, run in its own process (`--fabric-side SPEC`) --------------------------


def fabric_side(spec_file: Path) -> int:
    """Run each device's command with its stdin through one ThreadingGroup; check outputs."""
    import io

    import paramiko
    from fabric import Connection, ThreadingGroup

    spec = json.loads(spec_file.read_text())

    class DeviceConnection(Connection):  # type: ignore[misc]
        """A connection that runs its own device's command with its own job on stdin."""

        def __init__(self, device: dict[str, object]) -> None:
            super().__init__(
                str(device["host"]),
                user=str(device["user"]),
                port=int(str(device["port"])),
                connect_kwargs={
                    "key_filename": [str(device["key"])],
                    "look_for_keys": False,
                    "allow_agent": True,
                },
            )
            # fabric sets AutoAddPolicy; fleet checks host keys, so the baseline does too.
            self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
            self.client.load_host_keys(str(device["known_hosts"]))
            self.device = device

        def run(self, command: str, **kwargs: object) -> object:
            stdin = WholeStream(str(self.device["stdin"]))
            return super().run(str(self.device["command"]), in_stream=stdin, **kwargs)

    class WholeStream(io.StringIO):
        """invoke reads an in_stream that is not a terminal one byte per 10 ms (its
        input_sleep): a 1.3 kB job took 13 s to send. This one hands over all it holds at
        the first read, so the baseline measures the fan-out, not invoke's pacing."""

        def read(self, size: int | None = -1) -> str:
            return super().read()

    group = ThreadingGroup.from_connections([DeviceConnection(d) for d in spec["devices"]])
    results = group.run("ignored: each connection runs its own", hide=True, warn=True)
    bad = []
    for cxn, result in results.items():
        events = [json.loads(line)["event"] for line in result.stdout.splitlines()]
        if spec["expect"] == "agent" and (events[-1:] != ["done"] or "result" not in events):
            bad.append(f"{cxn.host}: {events} {result.stderr[-300:]}")
        if spec["expect"] != "agent" and result.exited != 0:
            bad.append(f"{cxn.host}: exit {result.exited} {result.stderr[-300:]}")
    group.close()
    if bad or len(results) != len(spec["devices"]):
        print("fabric side failed:", *bad, sep="\n", file=sys.stderr)
        return 1
    return 0


# --- the controller side --------------------------------------------------------------------


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
    """Wall time, CPU time and peak RSS of one child process."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
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


def _read_both(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """Read stdout and stderr to their end without reaping the process (wait4 does)."""
    chunks: dict[str, bytes] = {}

    def drain(name: str, stream: IO[bytes]) -> None:
        chunks[name] = stream.read()

    readers = [
        threading.Thread(target=drain, args=("out", proc.stdout)),
        threading.Thread(target=drain, args=("err", proc.stderr)),
    ]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    return chunks["out"], chunks["err"]


class Bench:
    def __init__(self, lab: Path, work: Path, parallel: int | None) -> None:
        import yaml

        self.lab = lab
        self.work = work
        self.parallel = parallel
        self.inventory = lab / "inventory.yaml"
        self.suite = work / "fanout.yaml"
        self.suite.write_text(yaml.safe_dump(SUITE, sort_keys=False))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_INFLUX_")}
        self.runs = 0

    def fleet_run(self, devices: str = "lab", checkout: Path | None = None) -> Timed:
        """`fleet run` of the suite: this tree's console script, or `python -m fleet` run
        in another copy of the source (its own fleet and agent first on the module path)."""
        self.runs += 1
        store = self.work / f"run{self.runs}.sqlite"
        argv = ["run", str(self.suite), "--inventory", str(self.inventory)]
        argv += ["--devices", devices, "--store", str(store)]
        if self.parallel:
            argv += ["--parallel", str(self.parallel)]
        if checkout is None:
            timed = Timed([*fleet_command(), *argv], self.env)
        else:
            env = {**self.env, "PYTHONPATH": f"{checkout}:{checkout / 'agents'}"}
            timed = Timed([sys.executable, "-m", "fleet", *argv], env, checkout)
        if timed.code not in (0, 1):
            raise SystemExit(f"fleet run exited {timed.code}:\n{timed.stderr[-3000:]}")
        from fleet.results.store import Store

        results = Store(store).records(measurement="result")
        expected = len(self.selected(devices))
        measured = [r for r in results if r.status != "error"]
        if len(measured) != expected:
            raise SystemExit(f"fleet run stored {len(measured)} of {expected}:\n{timed.stderr}")
        store.unlink()
        return timed

    def selected(self, devices: str = "lab") -> list[Any]:
        from fleet.inventory import load_inventory

        return load_inventory(self.inventory).select(devices.split(","))

    def fabric_spec(self, expect: str, devices: str = "lab") -> Path:
        """The fabric side's work: per device, the command and stdin fleet would use."""
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
            if expect == "agent":
                job = build_job(f"fabric-{index}", device_plan, artifacts, refused).job
                argv = [device.python, f"{device.workdir}/{agent.name}", "serve"]
                stdin = json.dumps(job) + "\n"
            elif expect == "python":
                argv, stdin = [device.python, "-c", "pass"], ""
            else:
                argv, stdin = ["true"], ""
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

    def fabric_run(self, spec: Path) -> Timed:
        timed = Timed([sys.executable, __file__, "--fabric-side", str(spec)], self.env)
        if timed.code != 0:
            raise SystemExit(f"fabric side failed:\n{timed.stderr[-3000:]}")
        return timed

    def fleet_devices(self) -> Timed:
        argv = [*fleet_command(), "devices", "--inventory", str(self.inventory)]
        timed = Timed([*argv, "--devices", "lab"], self.env)
        if timed.code != 0:
            raise SystemExit(f"fleet devices exited {timed.code}:\n{timed.stderr[-3000:]}")
        return timed


class Rebuild(Exception):
    """A timed run pushed a file (someone changed the agent meanwhile): not warm."""


Side = tuple[str, Callable[[], Timed]]


def compare(sides: list[Side], rounds: int) -> dict[str, list[Timed]]:
    """Each side once per round, the order rotated every round, so that a change of load
    on a shared machine hits them all; the baseline is the last side."""
    runs: dict[str, list[Timed]] = {label: [] for label, _ in sides}
    for number in range(rounds):
        shift = number % len(sides)
        this = {label: side() for label, side in sides[shift:] + sides[:shift]}
        if any("] push " in timed.stderr for timed in this.values()):
            raise Rebuild
        base = this[sides[-1][0]].wall
        said = ", ".join(
            f"{label} {t.wall:.2f} s ({t.wall / base:.2f})" for label, t in this.items()
        )
        print(f"  round {number + 1}: {said}", file=sys.stderr)
        for label, timed in this.items():
            runs[label].append(timed)
    return runs


def report(runs: dict[str, list[Timed]]) -> None:
    labels = list(runs)
    base_label = labels[-1]
    base = statistics.median(t.wall for t in runs[base_label])
    print(f"{'':<32} {'median s':>9} {'q1':>7} {'q3':>7} {'/ base':>7} {'cpu s':>7} {'rss MB':>7}")
    for label in labels:
        walls = [t.wall for t in runs[label]]
        q1, _, q3 = statistics.quantiles(walls, n=4) if len(walls) > 1 else (walls[0],) * 3
        median = statistics.median(walls)
        cpu = statistics.median(t.cpu for t in runs[label])
        rss = max(t.rss_mb for t in runs[label])
        print(
            f"{label:<32} {median:9.2f} {q1:7.2f} {q3:7.2f} {median / base:7.2f} {cpu:7.2f}"
            f" {rss:7.0f}"
        )
    for label in labels[:-1]:
        ratios = [a.wall / b.wall for a, b in zip(runs[label], runs[base_label], strict=True)]
        print(
            f"{label} / {base_label}: ratio of medians"
            f" {statistics.median(t.wall for t in runs[label]) / base:.2f}; per round"
            f" {', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f})"
        )


# --- processes per device session -------------------------------------------------------------

_CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+)")


class Trace:
    """What one device's sshd and everything under it started while traced."""

    def __init__(self, text: str) -> None:
        self.processes = 0  # forks (clone without CLONE_THREAD): every process started
        self.programs: Counter[str] = Counter()  # successful execs, by program
        self.commands: list[str] = []  # what sshd ran for each exec request (shell -c ...)
        self.failed_execs = 0  # exec attempts that failed (a PATH search, a missing tool)
        program: dict[str, str] = {}  # pid -> the program it runs now
        for pid, call, arguments, result in _calls(text):
            if call in ("fork", "vfork", "clone", "clone3") and int(result) > 0:
                if "CLONE_THREAD" not in arguments:
                    self.processes += 1
                    program[result] = program.get(pid, "sshd")
            elif call == "execve" and int(result) == 0:
                found = re.search(r"\[(.*?)\]", arguments)
                argv = re.findall(r'"((?:[^"\\]|\\.)*)"', found.group(1) if found else "")
                name = Path(argv[0]).name if argv else "?"
                self.programs[name] += 1
                if program.get(pid, "").startswith("sshd") and argv[1:2] == ["-c"]:
                    self.commands.append(" ".join(Path(w).name for w in argv[2].split()[:3]))
                program[pid] = name
            elif call == "execve":
                self.failed_execs += 1

    def describe(self) -> str:
        top = ", ".join(f"{n} {p}" for p, n in self.programs.most_common(6))
        return (
            f"{self.processes} processes started; exec requests (sshd ran): "
            f"{'; '.join(self.commands) or 'none'}; programs exec'd: {sum(self.programs.values())}"
            f" (most: {top}); failed exec attempts: {self.failed_execs}"
        )


def _calls(text: str) -> Iterator[tuple[str, str, str, str]]:
    """(pid, syscall, arguments, result) of each complete call in strace -f output."""
    pending: dict[str, str] = {}
    for line in text.splitlines():
        pid, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")]
            continue
        if rest.startswith("<..."):
            rest = pending.pop(pid, "") + rest.split("resumed>", 1)[1]
        match = _CALL.match(rest)
        if match:
            call, arguments, result = match.groups()
            yield pid, call, arguments, result


def traced(lab: Path, name: str, action: Callable[[], object]) -> Trace:
    """Run `action` with strace attached to device `name`'s sshd (-f: every process it
    starts, sessions, shells, agents and workers included)."""
    from fleet import lab as lab_lib

    device = next(d for d in lab_lib.load(lab) if d.name == name)
    log = lab / f"strace-{name}.log"
    calls = "trace=fork,vfork,clone,clone3,execve"
    tracer = subprocess.Popen(
        ["strace", "-f", "-qq", "-s", "300", "-e", calls, "-o", str(log), "-p", str(device.pid)],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while "TracerPid:\t0" in Path(f"/proc/{device.pid}/status").read_text():
        assert time.monotonic() < deadline, "strace did not attach"
        time.sleep(0.05)
    try:
        action()
        time.sleep(1)  # a session's processes may end just after the client has its answer
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
    return Trace(log.read_text())


def count_processes(bench: Bench, checkout: Path | None) -> None:
    spec = bench.fabric_spec("agent", "lab1")
    sides: list[Side] = [("fleet run", lambda: bench.fleet_run("lab1"))]
    if checkout is not None:
        sides.append((f"fleet run @{checkout.name}", lambda: bench.fleet_run("lab1", checkout)))
    sides.append(("fabric (same agent job)", lambda: bench.fabric_run(spec)))
    print("\nprocesses started on one device (lab1) by one run, strace -f on its sshd:")
    for label, side in sides:
        side()  # untimed: pushes what this side's agent needs, outside the count
        print(f"  {label}: {traced(bench.lab, 'lab1', side).describe()}")
    baseline = traced(
        bench.lab, "lab1", lambda: bench.fabric_run(bench.fabric_spec("true", "lab1"))
    )
    print(f"  for scale, fabric running `true`: {baseline.describe()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=32, help="lab size (default: 32)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (default: 7)")
    parser.add_argument("--lab", type=Path, help="use this lab (already up; left up)")
    parser.add_argument("--parallel", type=int, help="fleet run --parallel (default: none)")
    parser.add_argument(
        "--checkout", type=Path, help="also time `fleet run` of another source copy (before)"
    )
    parser.add_argument("--count", action="store_true", help="count processes per session")
    parser.add_argument("--no-devices", action="store_true", help="skip `fleet devices`")
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
        bench = Bench(lab, Path(tmp), args.parallel)
        devices = len(bench.selected())
        for _attempt in range(3):
            # Untimed: each side's files (agents differ between checkouts) onto the devices.
            bench.fleet_run()
            sides: list[Side] = [("fleet run", bench.fleet_run)]
            if checkout is not None:
                bench.fleet_run(checkout=checkout)
                label = f"fleet run @{checkout.name}"
                sides.append((label, lambda: bench.fleet_run(checkout=checkout)))
            sides.append(
                ("fabric ThreadingGroup", partial(bench.fabric_run, bench.fabric_spec("agent")))
            )
            print(f"{devices} devices, {args.rounds} rounds", file=sys.stderr)
            try:
                runs = compare(sides, args.rounds)
                break
            except Rebuild:
                print("  a timed run pushed a file: warming up again", file=sys.stderr)
        else:
            raise SystemExit("the agent kept changing under the bench")
        print(f"\n`fleet run` (warm, one case) on {devices} lab devices; baseline: fabric")
        report(runs)

        if args.no_devices:
            pass
        elif (ROOT / "fleet" / "cli" / "devices.py").exists():
            bench.fleet_devices()  # untimed once
            python = bench.fabric_spec("python")
            runs = compare(
                [
                    ("fleet devices", bench.fleet_devices),
                    ("fabric python -c pass", lambda: bench.fabric_run(python)),
                ],
                args.rounds,
            )
            print(f"\n`fleet devices` on {devices} lab devices; baseline: fabric")
            report(runs)
        else:
            print("\nfleet devices: fleet/cli/devices.py does not exist; not measured")

        if args.count:
            count_processes(bench, checkout)
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
