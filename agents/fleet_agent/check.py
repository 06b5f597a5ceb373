"""What `fleet devices` asks a device before a run, printed as one line: a Python literal.

The controller does not need the agent on the device for this: it sends this module's source,
with the agent modules it imports, on stdin to ``<fleet_python> -c "exec(stdin)" WORKDIR AGENT``
(``fleet/preflight.py``), so the check costs one Python start and a few milliseconds more than
``python3 -c pass``. For that the modules it loads import nothing that Python has not loaded
before it runs a line, but ``fcntl``: not numpy nor a runtime (their versions come from the
names of their metadata folders, ``distributions.installed``, as in the hello event), not
``typing`` (annotations only: 7-20 ms on a Python 3.8 that starts in 20), not ``json`` (it
imports ``re``: 20-30 ms there), so the answer is ``ascii()`` of a dict, which the controller
reads with ``ast.literal_eval``. Temperature and throttling come from the readers the thermal
watch uses (``live.py``), which start a vendor tool only where it is installed.
"""

from __future__ import annotations

import fcntl
import os
import sys

from fleet_agent import distributions, live

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (mypy knows the name)
LOCK = "agent.lock"  # serve's lock in the workdir; its content names the run that holds it
_MIB = 1024.0 * 1024.0

if TYPE_CHECKING:  # for mypy, and for the controller's annotations (fleet/preflight.py)
    from typing import Dict, List, Optional, Sequence, Tuple, TypedDict

    class Check(TypedDict):
        """A device as `fleet devices` reports it; None where this device cannot tell."""

        python: str  # "3.8.10"
        executable: str
        system: str  # "Linux 6.1.0-rpi7-rpi-v8"
        machine: str  # "aarch64"
        runtimes: Dict[str, str]  # module -> version, numpy included (distributions.py)
        workdir: str  # absolute
        workdir_exists: bool
        writable: bool  # the workdir, or the folder fleet run would create it in
        free_mb: Optional[float]  # free to this user in the workdir's file system
        agent: bool  # the controller's current agent-<sha12>.pyz is there
        other_agents: List[str]  # agent-*.pyz of other versions
        temperature_c: Optional[float]
        throttled: Optional[bool]
        busy: Optional[bool]  # None: the lock could not be tried
        holder: Optional[str]  # what the lock file says while busy: "run <id> from <who> ..."


def _existing(path: str) -> str:
    """The path, or its nearest ancestor that exists: where fleet run would create it."""
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def lock_holder(workdir: str) -> Tuple[Optional[bool], Optional[str]]:
    """(busy, holder): whether a `serve` holds the workdir's lock, and who, by its text.

    The lock is tried and released at once: held for microseconds, so a run starting just
    then is told "busy" only in that instant, and waits for it like any busy device. Opened
    read-only: a device that never ran keeps no lock file, and this creates none.
    """
    try:
        with open(os.path.join(workdir, LOCK)) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True, lock.read().strip() or "another fleet run"
            fcntl.flock(lock, fcntl.LOCK_UN)
    except FileNotFoundError:
        return False, None  # no run ever took it, so none holds it
    except OSError:  # unreadable, or a file system without flock
        return None, None
    return False, None


def check(workdir: str, agent: str) -> Check:
    """Everything `fleet devices` shows about this device; never raises on a missing part."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    exists = os.path.isdir(workdir)
    existing = _existing(workdir)
    try:
        stat = os.statvfs(existing)
        free_mb: Optional[float] = round(stat.f_bavail * stat.f_frsize / _MIB, 1)
    except OSError:
        free_mb = None
    others = []
    if exists:
        try:
            names = os.listdir(workdir)
        except OSError:
            names = []
        others = sorted(
            n for n in names if n.startswith("agent-") and n.endswith(".pyz") and n != agent
        )
    busy, holder = lock_holder(workdir) if exists else (False, None)
    uname = os.uname()
    return {
        "python": "{}.{}.{}".format(*sys.version_info[:3]),
        "executable": sys.executable,
        "system": "{} {}".format(uname.sysname, uname.release),
        "machine": uname.machine,
        "runtimes": distributions.installed(),
        "workdir": workdir,
        "workdir_exists": exists,
        "writable": os.access(existing, os.W_OK),
        "free_mb": free_mb,
        "agent": exists and os.path.isfile(os.path.join(workdir, agent)),
        "other_agents": others,
        "temperature_c": live.temperature_c(),
        "throttled": live.throttled_now(),
        "busy": busy,
        "holder": holder,
    }


def main(argv: Sequence[str]) -> int:
    """``check WORKDIR AGENT``: the Check on stdout, one line, ``ascii()`` of the dict."""
    if len(argv) != 2:
        sys.stderr.write("usage: check WORKDIR AGENT_FILE_NAME\n")
        return 2
    sys.stdout.write(ascii(check(argv[0], argv[1])) + "\n")
    return 0
