"""A schedule on this machine: its units written (and the timer enabled where systemd runs),
found, listed and removed; its secrets file created mode 600."""

from __future__ import annotations

import os
import re
import shlex
import stat
from collections.abc import Mapping
from pathlib import Path

from fleet.errors import ConfigError
from fleet.runlock import check_name
from fleet.schedule.command import PREFIX, Schedule
from fleet.schedule.tools import run_tool
from fleet.schedule.units import unit_dir, units, verify


def install(schedule: Schedule, directory: Path | None = None) -> list[str]:
    """Write the units (checked by systemd-analyze first) and the environment file when it
    is missing; enable and start the timer when systemd runs here and `directory` is the
    standard one. Returns what was done, one line each."""
    files = units(schedule)
    problems = verify(files, schedule.user)
    ours = [line for line in problems or [] if any(name in line for name in files)]
    if ours:
        raise ConfigError(f"systemd-analyze verify refused the units: {'; '.join(ours)}")
    said = [f"systemd-analyze verify: {line}" for line in problems or [] if line not in ours]
    if problems is None:
        said.append("not verified: systemd-analyze is not installed here")
    standard = directory is None
    directory = directory or unit_dir(schedule.user)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            _write(directory / name, text, 0o644)
    except PermissionError as exc:
        raise ConfigError(
            f"{exc.filename}: permission denied; install system units as root (sudo), or"
            " per user with --user"
        ) from None
    said.append(f"wrote {directory / schedule.service} and {directory / schedule.timer}")
    said += _prepare_env_file(schedule)
    if standard and _systemd_running():
        for command in (
            [*schedule.systemctl, "daemon-reload"],
            [*schedule.systemctl, "enable", "--now", schedule.timer],
        ):
            said.append(_systemctl(command))
        if schedule.user:
            said.append(
                "a user timer runs while you are logged in; `loginctl enable-linger` makes it"
                " run without a session"
            )
    else:
        reload = shlex.join([*schedule.systemctl, "daemon-reload"])
        enable = shlex.join([*schedule.systemctl, "enable", "--now", schedule.timer])
        said.append(f"to start it where systemd runs: {reload} && {enable}")
    return said


def installed(name: str, user: bool, directory: Path | None = None) -> dict[Path, str]:
    """The schedule's unit files as written, by path."""
    directory = directory or unit_dir(user)
    check_name(name)
    found = [
        directory / f"{PREFIX}{name}.{kind}"
        for kind in ("service", "timer")
        if (directory / f"{PREFIX}{name}.{kind}").is_file()
    ]
    if not found:
        where = "--user " if user else ""
        raise ConfigError(
            f"no schedule {name!r} in {directory}; `fleet schedule list {where}` shows them"
        )
    return {path: path.read_text() for path in found}


def lock_dir_of(files: Mapping[Path, str]) -> Path | None:
    """Where the schedule's run keeps its lock: its FLEET_HOME, as the service sets it."""
    for text in files.values():
        for line in text.splitlines():
            if line.startswith('Environment="FLEET_HOME='):
                value = line.removeprefix('Environment="FLEET_HOME=').removesuffix('"')
                home = re.sub(r"\\(.)", r"\1", value).replace("%%", "%")
                return Path(home) / "locks"
    return None


def listing(user: bool, directory: Path | None = None) -> list[str]:
    """The names of the schedules in the unit folder."""
    directory = directory or unit_dir(user)
    return sorted(
        path.name.removeprefix(PREFIX).removesuffix(".timer")
        for path in directory.glob(f"{PREFIX}*.timer")
    )


def status(name: str, user: bool) -> str | None:
    """`systemctl list-timers` for the schedule when systemd runs here."""
    if not _systemd_running():
        return None
    command = [*(["systemctl", "--user"] if user else ["systemctl"]), "list-timers", "--all"]
    done = run_tool([*command, f"{PREFIX}{name}.timer"])
    return (done.stdout or done.stderr).rstrip()


def remove(name: str, user: bool, directory: Path | None = None) -> list[str]:
    """Stop and disable the timer (when systemd runs here), then delete both units. The
    environment file stays: it is yours, and may hold secrets you want to keep."""
    files = installed(name, user, directory)
    systemctl = ["systemctl", "--user"] if user else ["systemctl"]
    said = []
    if directory is None and _systemd_running():
        said.append(_systemctl([*systemctl, "disable", "--now", f"{PREFIX}{name}.timer"]))
    for path in files:
        path.unlink()
        said.append(f"removed {path}")
    if directory is None and _systemd_running():
        said.append(_systemctl([*systemctl, "daemon-reload"]))
    lines = [line for text in files.values() for line in text.splitlines()]
    for line in lines:
        if line.startswith("EnvironmentFile="):
            env_file = line.removeprefix("EnvironmentFile=").lstrip("-").replace("%%", "%")
            said.append(f"kept {env_file}, which may hold secrets: delete it yourself if unused")
    return said


def _systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir()  # sd_booted(3)


def _systemctl(command: list[str]) -> str:
    try:
        done = run_tool(command)
    except OSError as exc:
        return f"could not run {shlex.join(command)}: {exc.strerror}; run it yourself"
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["failed"])[-1]
        return f"{shlex.join(command)} failed ({reason}); run it yourself once that is fixed"
    return f"ran {shlex.join(command)}"


def _prepare_env_file(schedule: Schedule) -> list[str]:
    """Create the secrets file, empty and mode 600, or warn when the existing one is readable
    by others or owned by someone else."""
    path = schedule.environment_file
    if path.exists():
        info = path.stat()
        said = []
        if info.st_mode & 0o077:
            said.append(
                f"warning: {path} is readable by others (mode {stat.S_IMODE(info.st_mode):o});"
                f" chmod 600 {shlex.quote(str(path))}"
            )
        if info.st_uid != os.geteuid():
            said.append(f"warning: {path} belongs to uid {info.st_uid}, not to you")
        return said
    path.parent.mkdir(mode=0o700 if schedule.user else 0o755, parents=True, exist_ok=True)
    template = (
        f"# Secrets for the fleet schedule {schedule.name}: NAME=value lines, read before each\n"
        "# run (systemd's EnvironmentFile=, or the crontab line). Keep it yours and mode 600.\n"
        "#FLEET_INFLUX_TOKEN=\n"
        "#FLEET_INFLUX_PASSWORD=\n"
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(template)
    return [f"wrote {path} (mode 600): put the schedule's secrets there"]


def _write(path: Path, text: str, mode: int) -> None:
    """Atomically: a run of systemd never reads half a unit."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.chmod(mode)
    temporary.replace(path)
