"""Scheduled runs with the machinery people already run: a systemd service + timer pair, or a
crontab line where there is no systemd (`fleet schedule`; docs/nightly.md).

Both start one command, `fleet run SUITE ... --exclusive NAME --if-busy skip|wait`, so a
run that finds the previous one still going skips or waits (fleet/runlock.py) instead of
piling up. Every argument is written the way its reader parses it: systemd's command-line
quoting for ExecStart= (specifiers `%` and variables `$` doubled), shlex for the shell that
cron starts. Secrets never go into a unit file (every user can read /etc/systemd/system and
~/.config): the service reads them from an EnvironmentFile= of mode 600.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleet import __version__, paths
from fleet.errors import ConfigError
from fleet.inventory import load_inventory
from fleet.runlock import IfBusy, check_name
from fleet.suite import load_suite

PREFIX = "fleet-"
# Environment variables that hold a secret by their name; their *_FILE forms name a file.
SECRET = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|PASSPHRASE|PRIVATE|(^|_)KEY$", re.I)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# Options of `fleet run` that `fleet schedule install` sets itself.
OWN_RUN_OPTIONS = (
    "--inventory",
    "--devices",
    "--store",
    "--config",
    "--exclusive",
    "--if-busy",
    "--lock-timeout",
    "--plan",
)
# An ExecStart= argument written without quotes: nothing systemd or a reader would take apart.
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
_TOOL_TIMEOUT_S = 30
MAX_DELAY_S = 7 * 86_400


@dataclass(frozen=True)
class Schedule:
    """One scheduled run: what `fleet run` it starts, when, where and with which settings."""

    name: str
    argv: tuple[str, ...]  # the whole command, the fleet program first
    at: str  # systemd OnCalendar=, normalized by systemd-analyze when it is installed
    user: bool  # a --user unit (~/.config/systemd/user) rather than a system one
    workdir: Path
    environment: tuple[tuple[str, str], ...]  # no secrets: those live in environment_file
    environment_file: Path
    randomized_delay_s: int = 0
    description: str = ""
    warnings: tuple[str, ...] = ()  # what works but should change; the CLI shows them

    @property
    def service(self) -> str:
        return f"{PREFIX}{self.name}.service"

    @property
    def timer(self) -> str:
        return f"{PREFIX}{self.name}.timer"

    @property
    def systemctl(self) -> list[str]:
        return ["systemctl", "--user"] if self.user else ["systemctl"]


def make_schedule(
    suite_file: Path,
    *,
    at: str,
    name: str | None = None,
    inventory: Path | None = None,
    devices: str | None = None,
    user: bool = False,
    randomized_delay: str | None = None,
    workdir: Path | None = None,
    store: Path | None = None,
    config: Path | None = None,
    env: Sequence[str] = (),
    env_file: Path | None = None,
    if_busy: IfBusy = "skip",
    lock_timeout_s: float | None = None,
    run_options: Sequence[str] = (),
    fleet: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Schedule:
    """Check everything a night would trip over (the suite, the inventory and selection, the
    calendar, the paths) now, and resolve every path, so the unit runs the same command from
    anywhere."""
    environ = os.environ if environ is None else environ
    suite_path = _absolute(suite_file, "the suite file")
    suite = load_suite(suite_path)
    name = check_name(name or suite.name)
    inventory_path = _absolute(inventory, "the inventory") if inventory else None
    inventory_data = load_inventory(inventory_path)
    if devices is not None:
        _text(devices, "--devices")
    inventory_data.select((devices or ("all" if inventory_path else "local")).split(","))
    workdir = _absolute(workdir or Path.cwd(), "the working directory")
    if not workdir.is_dir():
        raise ConfigError(f"{workdir}: the working directory does not exist; create it first")
    at, warnings = calendar(at)
    delay_s = timespan(randomized_delay) if randomized_delay else 0
    if config is None and (workdir / "fleet.toml").is_file():
        config = workdir / "fleet.toml"  # what `fleet run` there would read: say it
    for option in run_options:
        _text(option, "a fleet run option")
        if option.split("=")[0] in OWN_RUN_OPTIONS:
            raise ConfigError(
                f"{option.split('=')[0]} is set by fleet schedule install: give it there, not"
                " after --"
            )
    argv = [
        *fleet_command(fleet),
        "run",
        str(suite_path),
        *(["--inventory", str(inventory_path)] if inventory_path else []),
        *(["--devices", devices] if devices is not None else []),
        "--store",
        str(_absolute(store or paths.default_store(), "the store")),
        *(["--config", str(_absolute(config, "the configuration"))] if config else []),
        *run_options,
        "--exclusive",
        name,
        "--if-busy",
        if_busy,
        *(["--lock-timeout", f"{lock_timeout_s:g}"] if lock_timeout_s is not None else []),
    ]
    environment = {
        # The scheduled run keeps its lock, logs and caches where `fleet` run by hand does.
        "FLEET_HOME": str(_absolute(paths.data_dir(), "FLEET_HOME")),
        "FLEET_CACHE": str(_absolute(paths.cache_dir(), "FLEET_CACHE")),
        "PYTHONUNBUFFERED": "1",  # lines reach the journal as they are written, in order
    }
    env_file = _absolute(env_file or default_env_file(name, user), "the environment file")
    given = dict(_assignment(item, environ, env_file) for item in env)
    environment.update(given)
    for key in sorted(environ):
        if key.startswith("FLEET_") and key not in environment:
            if key == "FLEET_INVENTORY" and inventory_path:
                continue
            if SECRET.search(key) and not key.endswith("_FILE"):
                warnings.append(
                    f"{key} is set here; a schedule takes no secret from the shell: put"
                    f" {key}=... in {env_file} (mode 600)"
                )
            else:
                warnings.append(f"{key} is set here but not in the schedule: add --env {key}")
    return Schedule(
        name=name,
        argv=tuple(argv),
        at=at,
        user=user,
        workdir=workdir,
        environment=tuple(environment.items()),
        environment_file=env_file,
        randomized_delay_s=delay_s,
        description=f"fleet {name}: {suite.name} on {devices or ('all' if inventory else 'local')}",
        warnings=tuple(warnings),
    )


def fleet_command(fleet: Path | None = None) -> list[str]:
    """The fleet program a unit runs: the console script of this installation, by its real
    path (a shim or a PATH that only a login shell has would not be there at night)."""
    if fleet is not None:
        path = _absolute(fleet, "--fleet")
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigError(f"{path}: not an executable file; give the fleet program's path")
        return [str(path)]
    script = Path(sysconfig.get_path("scripts")) / "fleet"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [_text(str(Path(sys.executable).absolute()), "the Python program"), "-m", "fleet"]


def default_env_file(name: str, user: bool) -> Path:
    if user:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "fleet" / f"{name}.env"
    return Path("/etc/fleet") / f"{name}.env"


def unit_dir(user: bool) -> Path:
    if user:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "systemd" / "user"
    return Path("/etc/systemd/system")


# ---- the calendar and the delay ----------------------------------------------------------


def calendar(at: str) -> tuple[str, list[str]]:
    """OnCalendar= checked and normalized by `systemd-analyze calendar` where it is installed
    ("*-*-* 02:00" -> "*-*-* 02:00:00"); otherwise by fleet's own reading of the common forms."""
    _text(at, "--at")
    if not at.strip():
        raise ConfigError('--at is empty; give a systemd calendar time such as "*-*-* 02:00"')
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return _normalize(at), [
            f"--at {at!r} was not checked by systemd-analyze (not installed here);"
            " `systemd-analyze calendar` on the target machine checks it"
        ]
    done = subprocess.run(
        [tool, "calendar", "--", at],
        capture_output=True,
        text=True,
        timeout=_TOOL_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["not a calendar time"])[-1]
        raise ConfigError(
            f"--at {at!r}: {reason}; give a systemd calendar time such as"
            ' "*-*-* 02:00" (daily at 2), "Mon..Fri 22:30" or "hourly" (man systemd.time)'
        )
    for line in done.stdout.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Normalized form":
            return value.strip(), []
    return at.strip(), []


_SHORTHANDS = {
    "minutely": "*-*-* *:*:00",
    "hourly": "*-*-* *:00:00",
    "daily": "*-*-* 00:00:00",
    "weekly": "Mon *-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00",
    "yearly": "*-01-01 00:00:00",
    "annually": "*-01-01 00:00:00",
}


def _normalize(at: str) -> str:
    """The normalized form of the common calendar times, as systemd-analyze writes them."""
    text = at.strip()
    if text.lower() in _SHORTHANDS:
        return _SHORTHANDS[text.lower()]
    words = text.split()
    weekdays = words.pop(0) if words and words[0][:1].isalpha() else ""
    date = words.pop(0) if words and "-" in words[0] and ":" not in words[0] else "*-*-*"
    time = words.pop(0) if words and ":" in words[0] else "00:00:00"
    if date.count("-") == 1:
        date = f"*-{date}"
    if time.count(":") == 1:
        time = f"{time}:00"
    return " ".join(part for part in (weekdays, date, time, *words) if part)


_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86_400,
    "day": 86_400,
    "days": 86_400,
    "w": 604_800,
    "week": 604_800,
    "weeks": 604_800,
}


def timespan(text: str) -> int:
    """Seconds in a systemd time span: "900", "15min", "1h 30min"."""
    _text(text, "--randomized-delay")
    spaced = text.strip().lower()
    parts = re.findall(r"(\d+)\s*([a-z]*)", spaced)
    written = re.fullmatch(r"(?:\d+\s*[a-z]*\s*)+", spaced) is not None
    if written and all(unit in _UNITS or not unit for _, unit in parts):
        seconds = sum(int(number) * _UNITS.get(unit, 1) for number, unit in parts)
        if seconds <= MAX_DELAY_S:
            return seconds
    raise ConfigError(
        f"--randomized-delay {text!r}: give a time span of at most 7 days, such as 900,"
        ' "15min" or "1h 30min"'
    )


def _span(seconds: int) -> str:
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds and seconds % 60 == 0:
        return f"{seconds // 60}min"
    return f"{seconds}s"


# ---- systemd ---------------------------------------------------------------------------


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
        done = subprocess.run(
            [tool, *(["--user"] if user else []), "verify", *sorted(unit_files)],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=_TOOL_TIMEOUT_S,
            check=False,
        )
    lines = (done.stdout + done.stderr).splitlines()
    problems = [line.replace(folder + "/", "") for line in lines if line.strip()]
    if done.returncode != 0 and not problems:
        problems = [f"systemd-analyze verify exited with {done.returncode}"]
    return problems


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
    done = subprocess.run(
        [*command, f"{PREFIX}{name}.timer"],
        capture_output=True,
        text=True,
        timeout=_TOOL_TIMEOUT_S,
        check=False,
    )
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
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_TOOL_TIMEOUT_S, check=False
        )
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


# ---- cron ------------------------------------------------------------------------------


def crontab_line(schedule: Schedule) -> str:
    """The same run as a crontab line (for `crontab -e`), with a comment line above it.

    The run lock (`--exclusive`, flock(2) on $FLEET_HOME/locks/NAME.lock) is what keeps two
    firings apart; flock(1) around it would take the same file from fleet (which would then
    find its own lock busy) or, on another file, skip without a word. Persistent=true has no
    cron equivalent: a night missed while the machine was off is not run later.
    """
    environment = dict(schedule.environment)
    log_dir = Path(environment.get("FLEET_HOME") or paths.data_dir()) / "logs"
    log = log_dir / f"{schedule.name}.log"
    env_file = shlex.quote(str(schedule.environment_file))
    steps = [
        f"cd {shlex.quote(str(schedule.workdir))}",
        f"mkdir -p {shlex.quote(str(log_dir))}",
        f"if [ -r {env_file} ]; then set -a; . {env_file}; set +a; fi",
    ]
    if schedule.randomized_delay_s:
        steps.append(f'sleep "$(shuf -i 0-{schedule.randomized_delay_s} -n 1)"')
    assignments = " ".join(f"{key}={shlex.quote(value)}" for key, value in environment.items())
    steps.append(f"{assignments} {shlex.join(schedule.argv)} >>{shlex.quote(str(log))} 2>&1")
    # cron turns an unescaped % into a line break, inside quotes too.
    command = " && ".join(steps).replace("%", "\\%")
    return (
        f"# {schedule.description} at {schedule.at} (fleet schedule; log: {log})\n"
        f"{cron_fields(schedule.at)} {command}"
    )


_WEEKDAYS = {"Mon": 1, "Tue": 2, "Wed": 3, "Thu": 4, "Fri": 5, "Sat": 6, "Sun": 7}


def cron_fields(at: str) -> str:
    """The five crontab fields of a normalized calendar time ("Mon..Fri *-*-* 02:00:00" ->
    "0 2 * * 1-5"), or a ConfigError naming what cron cannot say."""
    words = at.split()
    weekdays = words.pop(0) if words and words[0][:1].isalpha() else "*"
    cannot = f"--at {at!r} has no crontab equivalent"
    if len(words) != 2:
        raise ConfigError(f"{cannot} (cron runs in the machine's time zone): drop the zone")
    date, time = words
    if date.count("-") != 2 or time.count(":") != 2 or "~" in date:
        raise ConfigError(f"{cannot}; write it as [WEEKDAYS] *-MONTH-DAY HOUR:MINUTE")
    year, month, day = date.split("-")
    hour, minute, second = time.split(":")
    if year != "*":
        raise ConfigError(f"{cannot}: cron has no year")
    if second not in ("0", "00"):
        raise ConfigError(f"{cannot}: cron starts on the minute, not at second {second}")
    if weekdays != "*" and day != "*":
        raise ConfigError(f"{cannot}: cron runs on the day of the month OR the weekday, not both")
    return " ".join(
        [
            _cron_field(minute, 59, cannot),
            _cron_field(hour, 23, cannot),
            _cron_field(day, 31, cannot),
            _cron_field(month, 12, cannot),
            _cron_weekdays(weekdays, cannot),
        ]
    )


def _cron_field(value: str, largest: int, cannot: str) -> str:
    items = []
    for item in value.split(","):
        first, _, step = item.partition("/")
        low, dots, high = first.partition("..")
        numbers = [low] + ([high] if dots else [])
        if first != "*" and not all(n.isdigit() and int(n) <= largest for n in numbers):
            raise ConfigError(f"{cannot}: {item!r}")
        if step and not step.isdigit():
            raise ConfigError(f"{cannot}: {item!r}")
        if first == "*":
            text = "*"
        elif dots:
            text = f"{int(low)}-{int(high)}"
        elif step:
            text = f"{int(low)}-{largest}"  # systemd's A/S is "from A on", cron's needs a range
        else:
            text = str(int(low))
        items.append(f"{text}/{int(step)}" if step else text)
    return ",".join(items)


def _cron_weekdays(value: str, cannot: str) -> str:
    if value == "*":
        return "*"
    items = []
    for item in value.split(","):
        low, dots, high = item.partition("..")
        names = [low] + ([high] if dots else [])
        if not all(name in _WEEKDAYS for name in names):
            raise ConfigError(f"{cannot}: weekday {item!r}")
        numbers = [_WEEKDAYS[name] for name in names]
        if dots and numbers[0] > numbers[1]:
            raise ConfigError(f"{cannot}: the range {item!r} wraps around the week")
        if dots:
            items.append(f"{numbers[0]}-{numbers[1]}")
        else:
            items.append(str(numbers[0] % 7))
    return ",".join(items)


# ---- checks ----------------------------------------------------------------------------


def _text(value: str, what: str) -> str:
    """One line, no control characters: a line break would end the unit's setting."""
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ConfigError(f"{what} {value!r} has a control character (a line break?); remove it")
    return value


def _absolute(path: Path, what: str) -> Path:
    text = _text(str(path), what)
    if text != text.strip():
        raise ConfigError(f"{what} {text!r} begins or ends with a space; rename it")
    return Path(os.path.abspath(Path(text).expanduser()))


def _assignment(item: str, environ: Mapping[str, str], env_file: Path) -> tuple[str, str]:
    """`--env NAME=VALUE`, or `--env NAME` for its value here; never a secret."""
    key, equals, value = item.partition("=")
    if not ENV_NAME.fullmatch(key):
        raise ConfigError(f"--env {item!r}: give NAME=VALUE or NAME, NAME in A-Z, 0-9 and _")
    if SECRET.search(key) and not key.endswith("_FILE"):
        raise ConfigError(
            f"--env {key}: a secret must not be written into a unit or crontab, which others"
            f" can read and backups keep; put {key}=... in {env_file} (mode 600) instead"
        )
    if not equals:
        if key not in environ:
            raise ConfigError(f"--env {key}: not set here; give --env {key}=VALUE")
        value = environ[key]
    return key, _text(value, f"--env {key}")
