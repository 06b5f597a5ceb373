"""`fleet schedule`: run a suite at set times with a systemd timer, or cron (docs/nightly.md)."""

from __future__ import annotations

import os
from pathlib import Path

import click
from click.core import ParameterSource

from fleet.cli import output
from fleet.cli.options import (
    devices_option,
    if_busy_option,
    inventory_option,
    json_option,
    lock_timeout_option,
    path_option,
)
from fleet.runlock import DEFAULT_TIMEOUT_S

_user_option = click.option(
    "--user",
    is_flag=True,
    help="A per-user schedule (~/.config/systemd/user), not a system one (/etc/systemd/system).",
)
_unit_dir_option = path_option(
    "--unit-dir",
    file_okay=False,
    help="Unit folder to use instead of the standard one (packaging, tests); nothing is enabled.",
)


@click.group()
def schedule() -> None:
    """Run a suite at set times with a systemd timer (or cron), one run at a time."""


@schedule.command()
@click.argument("suite_file", type=click.Path(path_type=Path))
@click.argument("run_options", nargs=-1, type=click.UNPROCESSED, metavar="[-- RUN_OPTIONS]")
@click.option(
    "--at",
    required=True,
    metavar="CALENDAR",
    help='When, as systemd OnCalendar=: "*-*-* 02:00" (every night at 2), "Mon..Fri 22:30",'
    ' "hourly" (man systemd.time).',
)
@click.option("--name", default=None, help="Schedule and run-lock name (default: the suite's).")
@inventory_option
@devices_option("Host patterns, groups, hosts or tags, as `fleet run --devices`.")
@_user_option
@click.option(
    "--randomized-delay",
    metavar="SPAN",
    default=None,
    help='Start up to this much later, at random (RandomizedDelaySec=): 900, "15min", "1h".',
)
@path_option("--workdir", file_okay=False, help="Working directory of the run (default: this one).")
@path_option(
    "--store",
    envvar="FLEET_STORE",
    show_envvar=True,
    help="SQLite results store (default: $FLEET_HOME/results.sqlite, as now resolved).",
)
@path_option(
    "--config",
    envvar="FLEET_CONFIG",
    show_envvar=True,
    help="fleet.toml (default: the working directory's, when it has one).",
)
@click.option(
    "--env",
    multiple=True,
    metavar="NAME[=VALUE]",
    help="An environment variable for the run (NAME alone: its value here); never a secret.",
)
@path_option(
    "--env-file",
    dir_okay=False,
    help="Secrets file, mode 600, read before each run (default: /etc/fleet/NAME.env, or"
    " ~/.config/fleet/NAME.env with --user).",
)
@if_busy_option(
    "When the previous run still holds the lock: skip this one (exit 0) or wait.",
    default="skip",
    show_default=True,
)
@lock_timeout_option(
    f"With --if-busy wait: wait at most this many seconds (default {DEFAULT_TIMEOUT_S:g})."
)
@path_option(
    "--fleet",
    dir_okay=False,
    help="The fleet program to run (default: this installation's console script).",
)
@_unit_dir_option
@click.option("--print", "print_only", is_flag=True, help="Print the units; install nothing.")
@click.option("--cron", is_flag=True, help="Print an equivalent crontab line; install nothing.")
def install(
    suite_file: Path,
    run_options: tuple[str, ...],
    at: str,
    name: str | None,
    inventory: Path | None,
    devices: str | None,
    user: bool,
    randomized_delay: str | None,
    workdir: Path | None,
    store: Path | None,
    config: Path | None,
    env: tuple[str, ...],
    env_file: Path | None,
    if_busy: str,
    lock_timeout: float | None,
    fleet: Path | None,
    unit_dir: Path | None,
    print_only: bool,
    cron: bool,
) -> None:
    """Write a systemd service + timer that runs `fleet run SUITE_FILE --exclusive NAME` at
    --at, and enable the timer. Options after `--` go to `fleet run` (e.g. -- --parallel 4)."""
    from fleet.cli.run import run
    from fleet.schedule.command import make_schedule
    from fleet.schedule.cron import crontab_line
    from fleet.schedule.systemd import install as install_units
    from fleet.schedule.units import unit_dir as standard_unit_dir
    from fleet.schedule.units import units

    try:  # the options a night would trip over, checked now by `fleet run` itself
        run.make_context("fleet run", [str(suite_file), *run_options])
    except click.UsageError as exc:
        raise click.UsageError(f"after --: {exc.format_message()}") from None
    plan = make_schedule(
        suite_file,
        at=at,
        name=name,
        inventory=inventory,
        devices=devices,
        user=user,
        randomized_delay=randomized_delay,
        workdir=workdir,
        store=store,
        config=config,
        env=env,
        env_file=env_file,
        if_busy="wait" if if_busy == "wait" else "skip",
        lock_timeout_s=lock_timeout,
        run_options=run_options,
        fleet=fleet,
        environ=_not_taken(),
    )
    for warning in plan.warnings:
        output.warn(warning)
    if print_only:
        folder = unit_dir or standard_unit_dir(user)
        for file_name, text in units(plan).items():
            click.echo(f"# {folder / file_name}\n{text}")
    if cron:
        click.echo(crontab_line(plan))
    if not (print_only or cron):
        for line in install_units(plan, unit_dir):
            click.echo(line)


def _not_taken() -> dict[str, str]:
    """The environment less the variables this command took as option values: those are in
    the schedule's command line, and need no `--env`."""
    ctx = click.get_current_context()
    taken = {
        str(p.envvar)
        for p in ctx.command.params
        if p.name and ctx.get_parameter_source(p.name) is ParameterSource.ENVIRONMENT
    }
    return {k: v for k, v in os.environ.items() if k not in taken}


@schedule.command()
@click.argument("name")
@_user_option
@_unit_dir_option
def show(name: str, user: bool, unit_dir: Path | None) -> None:
    """Print the schedule NAME's units, its timer's next run and who holds its run lock."""
    from fleet import runlock
    from fleet.schedule.systemd import installed, lock_dir_of, status

    files = installed(name, user, unit_dir)
    for path, text in files.items():
        click.echo(f"# {path}\n{text}")
    timers = None if unit_dir else status(name, user)
    if timers:
        click.echo(timers)
    holder = runlock.holder(name, lock_dir_of(files))
    click.echo(f"run lock {name}: " + (f"held by {holder.describe()}" if holder else "free"))


@schedule.command(name="list")
@_user_option
@_unit_dir_option
@json_option
def list_(user: bool, unit_dir: Path | None, as_json: bool) -> None:
    """The schedules installed (system ones, or yours with --user)."""
    from fleet.schedule.systemd import listing

    names = listing(user, unit_dir)
    if as_json:
        output.echo_json({"schedules": names})
        return
    for name in names:
        click.echo(name)


@schedule.command()
@click.argument("name")
@_user_option
@_unit_dir_option
def remove(name: str, user: bool, unit_dir: Path | None) -> None:
    """Stop and disable the schedule NAME's timer and delete its units (its secrets file stays)."""
    from fleet.schedule.systemd import remove as remove_units

    for line in remove_units(name, user, unit_dir):
        click.echo(line)
