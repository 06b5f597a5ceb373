"""What one lab device's sessions cost it, for bench/fanout.py: the CPU time its sshd and
everything that sshd started used (from /proc), and with `--count`, counted with strace on
that sshd, the processes and programs they started and what sshd was asked to run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path


def device_cpu(sshd_pids: list[int]) -> float:
    """CPU seconds the lab's devices have used: each sshd's own and its reaped descendants'
    (every session, shell and Python it started), from /proc/PID/stat."""
    ticks = 0
    for pid in sshd_pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


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
            yield pid, *match.groups()  # type: ignore[misc]


def traced(sshd_pid: int, log: Path, action: Callable[[], object]) -> Trace:
    """Run `action` with strace attached to a device's sshd (-f: every process it starts,
    sessions, shells, agents and workers included), its output in `log`."""
    pid = sshd_pid
    calls = "trace=fork,vfork,clone,clone3,execve"
    tracer = subprocess.Popen(
        ["strace", "-f", "-qq", "-s", "300", "-e", calls, "-o", str(log), "-p", str(pid)],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while "TracerPid:\t0" in Path(f"/proc/{pid}/status").read_text():
        assert time.monotonic() < deadline, "strace did not attach"
        time.sleep(0.05)
    try:
        action()
        time.sleep(1)  # a session's processes may end just after the client has its answer
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
    return Trace(log.read_text())
