"""Reading the device now: its files and vendor tools, its temperature and throttling.

The thermal watch (``thermal.py``) samples ``temperature_c()`` and ``throttled_now()`` while a
case runs, and the pre-flight check (``check.py``) reads them once, so both stay cheap (a few
sysfs files, or one ``vcgencmd``) and never raise. The probes (``probes.py``) read their files
and run their tools through here too. Tools run as argv lists with a short timeout, and only
where they are installed: a missing one is found on PATH, not by starting a process to fail.
What they print is parsed in ``live_parse.py`` and ``facts_parse.py``. ``subprocess`` is
imported where a tool runs, not here: most devices run none for the pre-flight check.
"""

from __future__ import annotations

import errno
import os

from fleet_agent.live_parse import (
    THROTTLE_NOW_MASK,
    parse_thermal_zones,
    parse_vcgencmd_temp,
    parse_vcgencmd_throttled,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, for check.py's sake
if TYPE_CHECKING:
    from typing import Dict, List, Optional

# Module-level so that tests can point the readers at fixture trees and shorten the wait.
_THERMAL_ROOT = "/sys/class/thermal"
_COMMAND_TIMEOUT_S = 5.0


def read_text(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def find_tool(name: str) -> Optional[str]:
    """The program ``name`` runs, found on PATH as the shell would; None where there is none."""
    folders = [""] if os.sep in name else os.environ.get("PATH", os.defpath).split(os.pathsep)
    for folder in folders:
        path = os.path.join(folder, name)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


def _installed(name: str) -> None:
    if find_tool(name) is None:
        raise FileNotFoundError(errno.ENOENT, "not installed", name)


def run_tool(argv: List[str]) -> str:
    """What a tool prints; OSError if it is missing (without starting it), fails or hangs."""
    _installed(argv[0])
    import subprocess

    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=True
        ).stdout
    except subprocess.SubprocessError as exc:  # exited non-zero, or hung and was killed
        raise OSError("{}: {}".format(argv[0], exc)) from exc


def read_thermal_zones(root: str) -> Dict[str, float]:
    zones = []
    for entry in sorted(os.listdir(root)):
        if not entry.startswith("thermal_zone"):
            continue
        try:
            zones.append(
                (
                    read_text(os.path.join(root, entry, "type")),
                    read_text(os.path.join(root, entry, "temp")),
                )
            )
        except OSError:
            continue  # some Tegra zones refuse reads while their sensor is off
    return parse_thermal_zones(zones)


def thermal_zones() -> Dict[str, float]:
    """°C per sensor type of this device's thermal zones; OSError where it has none."""
    return read_thermal_zones(_THERMAL_ROOT)


def read_tegrastats_line(timeout: Optional[float] = None) -> str:
    """One line from ``tegrastats``, which otherwise prints every interval until killed;
    "" if it prints nothing in time; OSError where it is not installed."""
    _installed("tegrastats")
    import contextlib
    import signal
    import subprocess
    import threading

    proc = subprocess.Popen(
        ["tegrastats", "--interval", "100"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group, so that nothing it started outlives it
    )

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(_COMMAND_TIMEOUT_S if timeout is None else timeout, kill)
    timer.start()
    assert proc.stdout is not None  # for mypy: stdout=PIPE was asked for
    try:
        return proc.stdout.readline()
    finally:
        timer.cancel()
        kill()
        proc.wait()
        proc.stdout.close()


def temperature_c() -> Optional[float]:
    """The hottest sensor now, in °C: thermal zones, else ``vcgencmd``; None without either.
    Cheap enough to sample between timed runs."""
    try:
        zones = thermal_zones()
    except OSError:
        zones = {}
    if zones:
        return max(zones.values())
    try:
        return parse_vcgencmd_temp(run_tool(["vcgencmd", "measure_temp"]))
    except (OSError, ValueError):
        return None


def throttled_now() -> Optional[bool]:
    """Whether a Raspberry Pi is throttled, frequency-capped, at its soft temperature limit
    or under-volted right now; None where ``vcgencmd`` cannot tell."""
    try:
        out = run_tool(["vcgencmd", "get_throttled"])
        bits = int(str(parse_vcgencmd_throttled(out)["throttled_bits"]), 16)
    except (OSError, ValueError):
        return None
    return bool(bits & THROTTLE_NOW_MASK)
