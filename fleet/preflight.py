"""`fleet devices`: can each selected device take a run now, and if not, why and what fixes it.

One SSH connection and one command per device, every device at once (a thread pool, capped by
`parallel`): `<fleet_python> -c BOOT WORKDIR AGENT`, with a script on stdin that carries the
source of `fleet_agent.check` and of the few agent modules it imports, so nothing has to be
pushed first, and the device's own readers (the runtimes' metadata folders, its temperature
and throttling, the agent's lock) answer, not a copy of them. The device side costs one
Python start and a few milliseconds (`agents/fleet_agent/check.py` says what it leaves out);
the connection is the transport's own, set up as for `fleet run` (ssh config, known_hosts and
key read once per run), and so are its errors (kind and message with the fix).
"""

from __future__ import annotations

import ast
import functools
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import fleet_agent
from fleet.agent_build import build_agent
from fleet.errors import DeviceError
from fleet.inventory import Device
from fleet.transport import connect
from fleet_agent.distributions import DISTRIBUTIONS

if TYPE_CHECKING:
    from fleet_agent import check as agent_check

# The agent's own floor (vermin -t=3.8-).
MIN_PYTHON = (3, 8)
# Room for the agent and a few artifacts; below this a run would fail writing them.
MIN_FREE_MB = 100.0
# The check answers in well under a second; its slowest parts are two tools with a 5 s
# timeout each (vcgencmd, where present). A machine starved of CPU (a lab of 32 devices on
# two shared cores) has taken over 30 s, so this is generous.
CHECK_TIMEOUT_S = 60.0
# Runtime modules as the agent names them (distributions.py); numpy is no runtime.
NOT_RUNTIMES = ("numpy",)
RUNTIMES = [module for module in DISTRIBUTIONS if module not in NOT_RUNTIMES]

# The command's program: the script below, read from stdin in one read. (`python -` reads a
# script on stdin a byte at a time: a read call per byte, 41,000 for the 41 kB it once was.)
# Python 2 runs it too, so that an old interpreter still says its version.
BOOT = "import sys; exec(sys.stdin.read())"

# Written so that an old Python can still parse it and say its version; the agent modules are
# compiled only when imported, after the version test. The answer is one line, a Python
# literal (check.py says why not JSON).
_LOADER = """\
import sys
if sys.version_info < {min_python!r}:
    sys.stdout.write('{{"python": "%d.%d.%d"}}\\n' % tuple(sys.version_info[:3]))
    sys.exit(0)
SOURCES = {sources}
ModuleSpec = type(sys.__spec__)  # importlib.machinery's, without importing it
class AgentSource(object):
    def find_spec(self, name, path=None, target=None):
        if name not in SOURCES:
            return None
        return ModuleSpec(name, self, is_package=name == "fleet_agent")
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        name = module.__name__
        where = name.replace(".", "/") + ("/__init__.py" if name == "fleet_agent" else ".py")
        exec(compile(SOURCES[name], "<fleet-check>/" + where, "exec"), module.__dict__)
sys.meta_path.insert(0, AgentSource())
from fleet_agent.check import main
sys.exit(main(sys.argv[1:]))
"""
# The longest answer parsed (about 1 kB is usual): a device that prints more is not believed.
_MAX_ANSWER = 64 * 1024


@functools.cache
def check_script() -> bytes:
    """The script sent to each device: the loader and the sources of `fleet_agent.check` and
    every agent module it imports, found by reading their imports."""
    folder = Path(fleet_agent.__file__).parent
    sources: dict[str, str] = {}
    todo = ["fleet_agent", "fleet_agent.check"]
    while todo:
        name = todo.pop()
        if name in sources:
            continue
        leaf = name.partition(".")[2]
        path = folder / (f"{leaf.replace('.', '/')}.py" if leaf else "__init__.py")
        sources[name] = path.read_text()
        todo += _agent_imports(sources[name])
    # ascii(): an old Python must parse the script to say its version, whatever the sources hold
    loader = _LOADER.format(min_python=MIN_PYTHON, sources=ascii(dict(sorted(sources.items()))))
    return loader.encode()


def _agent_imports(source: str) -> list[str]:
    """The fleet_agent modules a module imports (`from fleet_agent import live` included),
    but not those under `if TYPE_CHECKING:`, which the device never runs."""
    found = []
    todo: list[ast.AST] = [ast.parse(source)]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo += node.orelse
            continue
        todo += ast.iter_child_nodes(node)
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("fleet_agent")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fleet_agent"):
            module = str(node.module)
            found.append(module)
            if module == "fleet_agent":
                found += [f"fleet_agent.{a.name}" for a in node.names]
    folder = Path(fleet_agent.__file__).parent
    return [  # `from fleet_agent import __version__` names a value, not a module
        name
        for name in found
        if name == "fleet_agent" or (folder / f"{name.partition('.')[2]}.py").exists()
    ]


def _is_type_checking(test: ast.expr) -> bool:
    name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", None)
    return name == "TYPE_CHECKING"


@dataclass
class DeviceCheck:
    """One device's answer: how far the connection got, what the device said, and what
    keeps it from taking a run (`problems`, each with its fix)."""

    device: Device
    agent_name: str
    seconds: float = 0.0
    error: DeviceError | None = None  # the connection or the command failed
    facts: agent_check.Check | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.problems

    @property
    def kind(self) -> str | None:
        return None if self.error is None else self.error.kind

    @property
    def reachable(self) -> bool:
        return self.kind != "unreachable"

    @property
    def host_key(self) -> bool | None:
        if self.kind == "unreachable":
            return None
        return self.kind != "host_key"

    @property
    def login(self) -> bool | None:
        if self.kind in ("unreachable", "host_key"):
            return None
        return self.kind != "login"

    @property
    def runtimes(self) -> dict[str, str] | None:
        if self.facts is None or "runtimes" not in self.facts:
            return None
        found = self.facts["runtimes"]
        return {k: v for k, v in found.items() if k not in NOT_RUNTIMES}

    def fact(self, key: str) -> Any:
        return None if self.facts is None else cast(dict[str, Any], self.facts).get(key)

    @property
    def agent(self) -> str | None:
        """The agent file on the device: "current", "old" (only other versions are there) or
        "missing" (fleet run sends it); None where the device did not say."""
        if self.facts is None or "agent" not in self.facts:
            return None
        if self.facts["agent"]:
            return "current"
        return "old" if self.facts["other_agents"] else "missing"

    def as_json(self) -> dict[str, Any]:
        """What `fleet devices --json` prints for the device."""
        runtimes = self.fact("runtimes")
        return {
            "device": self.device.name,
            "host": self.device.host,
            "port": self.device.port,
            "usable": self.usable,
            "problems": self.problems,
            "warnings": self.warnings,
            "reachable": self.reachable,
            "host_key": self.host_key,
            "login": self.login,
            "error_kind": self.kind,
            "error": None if self.error is None else str(self.error),
            "python": self.fact("python"),
            "executable": self.fact("executable"),
            "system": self.fact("system"),
            "machine": self.fact("machine"),
            "numpy": None if runtimes is None else runtimes.get("numpy"),
            "runtimes": self.runtimes,
            "agent": self.agent,
            "agent_file": self.agent_name,
            "other_agents": self.fact("other_agents"),
            "workdir": self.fact("workdir") or self.device.workdir,
            "writable": self.fact("writable"),
            "free_mb": self.fact("free_mb"),
            "temperature_c": self.fact("temperature_c"),
            "throttled": self.fact("throttled"),
            "busy": self.fact("busy"),
            "holder": self.fact("holder"),
            "seconds": round(self.seconds, 3),
        }


def check_devices(devices: Sequence[Device], parallel: int | None = None) -> list[DeviceCheck]:
    """Check every device, at most `parallel` at a time (default: all at once); in the
    order given. Never raises for a device: what went wrong is in its DeviceCheck."""
    if not devices:
        return []
    agent_name = build_agent().name
    script = check_script()
    workers = max(1, min(parallel or len(devices), len(devices)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda d: check_device(d, agent_name, script), devices))


def check_device(device: Device, agent_name: str, script: bytes | None = None) -> DeviceCheck:
    """One device: connect, run the check, judge what it said."""
    result = DeviceCheck(device, agent_name)
    started = time.monotonic()
    try:
        result.facts = _ask(device, agent_name, script or check_script())
    except DeviceError as exc:
        result.error = exc
        message = str(exc).removeprefix(f"{device.name}: ")
        result.problems.append(f"{exc.kind}: {message}")
    except _CheckFailed as exc:
        result.problems.append(str(exc))
    result.seconds = time.monotonic() - started
    if result.facts is not None:
        _judge(result)
    return result


class _CheckFailed(Exception):
    """The device was reached and logged into, but its Python could not run the check."""


def _ask(device: Device, agent_name: str, script: bytes) -> agent_check.Check:
    """The device's answer to the check script, over one connection and one command."""
    transport = connect(device)
    try:
        argv = [device.python, "-c", BOOT, device.workdir, agent_name]
        try:
            proc = transport.run(argv, stdin=script)
        except OSError as exc:  # the local device: the interpreter itself is missing
            raise _no_python(device, exc.strerror or str(exc)) from None
        try:
            out = list(proc.lines(idle_timeout=CHECK_TIMEOUT_S))
        except DeviceError as exc:
            if exc.kind != "timeout":
                raise
            raise DeviceError(
                device.name,
                f"no answer to the check within {CHECK_TIMEOUT_S:g} s: the device or its"
                " connection hung (overloaded? out of memory?); stopped it",
                "timeout",
            ) from None
        code = proc.wait()
    finally:
        transport.close()
    stderr = proc.stderr_text()
    if code == 127 or (code != 0 and "not found" in stderr and not out):
        raise _no_python(device, stderr)
    answer = next((line for line in reversed(out) if line.startswith("{")), None)
    if code != 0 or answer is None:
        raise _CheckFailed(
            f"python: the check ended with exit {code}: {stderr or 'no output'}; is"
            f" {device.python} a Python {'.'.join(map(str, MIN_PYTHON))}+? (fleet_python,"
            f" {device.source})"
        )
    try:  # a literal, never code: literal_eval evaluates nothing else
        facts = ast.literal_eval(answer) if len(answer) <= _MAX_ANSWER else None
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        facts = None
    if not isinstance(facts, dict):
        raise _CheckFailed(f"python: the check printed {answer[:200]!r}")
    return cast("agent_check.Check", facts)


def _no_python(device: Device, detail: str) -> _CheckFailed:
    return _CheckFailed(
        f"python: {device.python} not found ({detail.strip() or 'exit 127'}); fix fleet_python"
        f" ({device.source}) or provision the device (ansible/provision.yml)"
    )


def _judge(result: DeviceCheck) -> None:
    """The device answered: what keeps it from a run (problems) or is worth a look."""
    facts, device = cast(dict[str, Any], result.facts), result.device
    where = f"fleet_python ({device.source})"
    python = str(facts.get("python", "?"))
    if "runtimes" not in facts:  # the loader's answer for a Python older than the agent's
        needed = ".".join(map(str, MIN_PYTHON))
        result.problems.append(
            f"python: {device.python} is Python {python}, the agent needs {needed}+;"
            f" point {where} at a newer one"
        )
        return
    runtimes = result.runtimes or {}
    if "numpy" not in facts["runtimes"]:
        result.problems.append(
            f"numpy: not installed for {facts['executable']}; provision the device"
            f" (ansible/provision.yml) or pip install numpy there, or fix {where}"
        )
    if not runtimes:
        result.problems.append(
            f"runtime: none installed for {facts['executable']} ({', '.join(RUNTIMES)});"
            " provision the device (ansible/provision.yml)"
        )
    if not facts["writable"]:
        result.problems.append(
            f"workdir: {facts['workdir']} is not writable by {device.user or 'the login user'};"
            f" fix its permissions or fleet_workdir ({device.source})"
        )
    free = facts["free_mb"]
    if free is not None and free < MIN_FREE_MB:
        result.problems.append(
            f"disk: {free:.0f} MB free in {facts['workdir']} (fleet needs {MIN_FREE_MB:.0f});"
            " free some space there or move fleet_workdir"
        )
    if facts["busy"]:
        result.problems.append(
            f"busy: held by {facts['holder']}; `fleet run` waits for it (--wait), or stop that run"
        )
    if facts["throttled"]:
        result.warnings.append("throttled now: results measured now will read slow; cool it")
