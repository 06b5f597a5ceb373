"""The systemd service and timer of a schedule, every argument quoted the way systemd reads
it back, and `systemd-analyze verify` of them."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from fleet import __version__
from fleet.schedule.command import PREFIX, Schedule
from fleet.schedule.tools import run_tool

# An ExecStart= argument written without quotes: nothing systemd or a reader would take apart.
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def unit_dir(user: bool) -> Path:
    if user:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "systemd" / "user"
    return Path("/etc/systemd/system")


def units(schedule: Schedule) -> dict[str, str]:
    """The service and the timer, by file name."""
    return {schedule.service: service_unit(schedule), schedule.timer: timer_unit(schedule)}


def _header(schedule: Schedule) -> str:
    user = " --user" if schedule.user else ""
    return (
        f"# Written by `fleet schedule install` (fleet {__version__}); installing again\n"
        f"# replaces edits. Show: fleet schedule show {schedule.name}{user}\n"
        f"# Remove: fleet schedule remove {schedule.name}{user}\n"
    )


def service_unit(schedule: Schedule) -> str:
    network = (
        ""  # a user manager has no network-online.target
        if schedule.user
        else "Wants=network-online.target\nAfter=network-online.target\n"
    )
    environment = "".join(
        f"Environment={_quoted(f'{key}={value}', dollars=False)}\n"
        for key, value in schedule.environment
    )
    return (
        _header(schedule)
        + "\n[Unit]\n"
        + f"Description={_specifiers(schedule.description)}\n"
        + network
        + "\n[Service]\n"
        # oneshot: the unit is "activating" for the whole run, so the timer never starts a
        # second one beside it; the run lock covers runs started any other way.
        + "Type=oneshot\n"
        + f"WorkingDirectory={_specifiers(str(schedule.workdir))}\n"
        + environment
        + "# No secret goes in this file: every user can read it. FLEET_INFLUX_TOKEN,\n"
        + "# FLEET_INFLUX_PASSWORD and the like go in the file below, which you own, mode 600\n"
        + "# (chmod 600). The leading '-': a schedule without secrets needs no such file.\n"
        + f"EnvironmentFile=-{_specifiers(str(schedule.environment_file))}\n"
        + f"ExecStart={exec_line(schedule.argv)}\n"
        + "StandardOutput=journal\n"
        + "StandardError=journal\n"
        + f"SyslogIdentifier={PREFIX}{schedule.name}\n"
    )


def timer_unit(schedule: Schedule) -> str:
    delay = (
        f"RandomizedDelaySec={_span(schedule.randomized_delay_s)}\n"
        if schedule.randomized_delay_s
        else ""
    )
    return (
        _header(schedule)
        + "\n[Unit]\n"
        + f"Description={_specifiers(schedule.description)} at {schedule.at}\n"
        + "\n[Timer]\n"
        + f"OnCalendar={schedule.at}\n"
        # A night missed while the machine was off runs once when it is back.
        + "Persistent=true\n"
        + delay
        + f"Unit={schedule.service}\n"
        + "\n[Install]\n"
        + "WantedBy=timers.target\n"
    )


def exec_line(argv: Sequence[str]) -> str:
    """argv as ExecStart= reads it back (systemd.service(5), "Command lines")."""
    return " ".join(_exec_word(arg) for arg in argv)


def _exec_word(arg: str) -> str:
    if arg == ";":
        return "\\;"  # a lone ';' would end the command line
    escaped = _specifiers(arg).replace("$", "$$")
    if _PLAIN.fullmatch(escaped):
        return escaped
    return _quoted(arg, dollars=True)


def _quoted(text: str, *, dollars: bool) -> str:
    """Double quotes with C escapes; `%` (a specifier) and, where variables are expanded,
    `$` doubled."""
    escaped = _specifiers(text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + (escaped.replace("$", "$$") if dollars else escaped) + '"'


def _specifiers(text: str) -> str:
    return text.replace("%", "%%")


def verify(unit_files: Mapping[str, str], user: bool) -> list[str] | None:
    """What `systemd-analyze verify` says about these units (nothing when they are fine);
    None when systemd-analyze is not installed."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return None
    with tempfile.TemporaryDirectory(prefix="fleet-units-") as folder:
        for name, text in unit_files.items():
            (Path(folder) / name).write_text(text)
        env = dict(os.environ)
        if user and not env.get("XDG_RUNTIME_DIR"):
            runtime = Path(folder) / "runtime"  # the user manager checks it exists
            runtime.mkdir(mode=0o700)
            env["XDG_RUNTIME_DIR"] = str(runtime)
        argv = [tool, *(["--user"] if user else []), "verify", *sorted(unit_files)]
        done = run_tool(argv, cwd=folder, env=env)
    lines = (done.stdout + done.stderr).splitlines()
    problems = [line.replace(folder + "/", "") for line in lines if line.strip()]
    if done.returncode != 0 and not problems:
        problems = [f"systemd-analyze verify exited with {done.returncode}"]
    return problems


def _span(seconds: int) -> str:
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds and seconds % 60 == 0:
        return f"{seconds // 60}min"
    return f"{seconds}s"
