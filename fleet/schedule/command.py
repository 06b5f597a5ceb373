"""What a schedule runs: the `fleet run` command, its environment and its secrets file,
everything checked and every path resolved when it is installed."""

from __future__ import annotations

import os
import re
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleet import paths
from fleet.errors import ConfigError
from fleet.inventory import load_inventory
from fleet.runlock import IfBusy, check_name
from fleet.schedule.checks import absolute, one_line
from fleet.schedule.times import calendar, timespan
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
    suite_path = absolute(suite_file, "the suite file")
    suite = load_suite(suite_path)
    name = check_name(name or suite.name)
    inventory_path = absolute(inventory, "the inventory") if inventory else None
    inventory_data = load_inventory(inventory_path)
    if devices is not None:
        one_line(devices, "--devices")
    inventory_data.select((devices or ("all" if inventory_path else "local")).split(","))
    workdir = absolute(workdir or Path.cwd(), "the working directory")
    if not workdir.is_dir():
        raise ConfigError(f"{workdir}: the working directory does not exist; create it first")
    at, warnings = calendar(at)
    delay_s = timespan(randomized_delay) if randomized_delay else 0
    if config is None and (workdir / "fleet.toml").is_file():
        config = workdir / "fleet.toml"  # what `fleet run` there would read: say it
    for option in run_options:
        one_line(option, "a fleet run option")
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
        str(absolute(store or paths.default_store(), "the store")),
        *(["--config", str(absolute(config, "the configuration"))] if config else []),
        *run_options,
        "--exclusive",
        name,
        "--if-busy",
        if_busy,
        *(["--lock-timeout", f"{lock_timeout_s:g}"] if lock_timeout_s is not None else []),
    ]
    environment = {
        # The scheduled run keeps its lock, logs and caches where `fleet` run by hand does.
        "FLEET_HOME": str(absolute(paths.data_dir(), "FLEET_HOME")),
        "FLEET_CACHE": str(absolute(paths.cache_dir(), "FLEET_CACHE")),
        "PYTHONUNBUFFERED": "1",  # lines reach the journal as they are written, in order
    }
    env_file = absolute(env_file or default_env_file(name, user), "the environment file")
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
        path = absolute(fleet, "--fleet")
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigError(f"{path}: not an executable file; give the fleet program's path")
        return [str(path)]
    script = Path(sysconfig.get_path("scripts")) / "fleet"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [one_line(str(Path(sys.executable).absolute()), "the Python program"), "-m", "fleet"]


def default_env_file(name: str, user: bool) -> Path:
    if user:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "fleet" / f"{name}.env"
    return Path("/etc/fleet") / f"{name}.env"


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
    return key, one_line(value, f"--env {key}")
