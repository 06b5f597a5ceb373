"""The options several commands take, defined once, and what the CLI opens with them.

An option that reads the same everywhere is a decorator (`store_option`); one whose help
says something else in each command is made by a function given that help
(`devices_option(...)`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from fleet import paths
from fleet.cli import output
from fleet.errors import ConfigError
from fleet.results.store import Store
from fleet.runlock import IF_BUSY

if TYPE_CHECKING:
    from fleet.config import Config, InfluxConfig
    from fleet.inventory import Device

FC = TypeVar("FC", bound=Callable[..., Any])


def path_option(
    *decls: str, help: str, file_okay: bool = True, dir_okay: bool = True, **attrs: Any
) -> Callable[[FC], FC]:
    """An option naming a file or folder, taken as given: the library says what is wrong
    with it, in its own words."""
    kind = click.Path(file_okay=file_okay, dir_okay=dir_okay, path_type=Path)
    return click.option(*decls, type=kind, help=help, **attrs)


def devices_option(
    help: str = "Ansible host patterns (`pi:&edge`, `all:!jetson`, `pi*`), groups, hosts or tags,"
    " comma-separated (default: `local`, or `all` with an"
    " inventory).",
    envvar: str | None = "FLEET_DEVICES",
) -> Callable[[FC], FC]:
    """`--devices`; `envvar` None where the environment must not choose (a rerun's devices
    are the run's)."""
    return click.option("--devices", help=help, envvar=envvar, show_envvar=envvar is not None)


class _Shard(click.ParamType):  # type: ignore[type-arg]
    name = "K/N"

    def convert(self, value: str, param: object, ctx: object) -> tuple[int, int]:
        k, _, n = str(value).partition("/")
        if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
            self.fail(f"{value!r}: use K/N with 1 <= K <= N, e.g. 2/4")
        return int(k), int(n)


def shard_option(help: str) -> Callable[[FC], FC]:
    return click.option("--shard", type=_Shard(), help=help)


def gate_option(what: str) -> Callable[[FC], FC]:
    """`--gate/--no-gate` of a command that runs cases (`what`: the run, the rerun)."""
    return click.option(
        "--gate/--no-gate",
        default=None,
        help=f"Fail the {what} (exit 1) on a regression against the baseline (default: on when"
        " the suite declares `regressions:`).",
    )


def if_busy_option(help: str, **attrs: Any) -> Callable[[FC], FC]:
    return click.option("--if-busy", type=click.Choice(IF_BUSY), help=help, **attrs)


def lock_timeout_option(help: str) -> Callable[[FC], FC]:
    kind = click.FloatRange(min=0, max=7 * 86_400)
    return click.option("--lock-timeout", type=kind, metavar="SECONDS", help=help)


inventory_option = path_option(
    "--inventory",
    envvar="FLEET_INVENTORY",
    show_envvar=True,
    help="Inventory file or folder (without one, only `local`).",
)
store_option = path_option(
    "--store",
    "store_path",
    envvar="FLEET_STORE",
    show_envvar=True,
    help="SQLite results store (default: $FLEET_HOME/results.sqlite, XDG).",
)
config_option = path_option(
    "--config",
    "config_path",
    envvar="FLEET_CONFIG",
    show_envvar=True,
    help="fleet.toml with the InfluxDB settings (default: ./fleet.toml);"
    " FLEET_INFLUX_* variables override it.",
)
parallel_option = click.option(
    "--parallel",
    type=click.IntRange(min=1),
    help="At most this many devices at a time (default: every selected device at once).",
)
plan_option = click.option("--plan", "plan_only", is_flag=True, help="Print the plan and stop.")
json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document on stdout instead of the table (its shape: docs/cli.md).",
)


def run_option(
    help: str = "Run id or unique prefix (default: the latest run).",
) -> Callable[[FC], FC]:
    return click.option("--run", "run_option", default=None, metavar="RUN", help=help)


def the_run(argument: str | None, option: str | None) -> str | None:
    """The run named by `--run RUN` or, as before `--run` was everywhere, by the argument."""
    if argument and option and argument != option:
        raise click.UsageError(f"two runs named: {argument!r} and --run {option!r}; give one")
    return option or argument


def select_devices(
    inventory: Path | None, devices: str | None, shard: tuple[int, int] | None
) -> list[Device]:
    """The devices that --inventory, --devices and --shard select."""
    from fleet.inventory import load_inventory, share

    selectors = (devices or ("all" if inventory else "local")).split(",")
    try:
        selected = load_inventory(inventory).select(selectors)
    except ConfigError as exc:
        if inventory is not None:
            raise
        raise ConfigError(
            f"{exc}; without an inventory only `local` exists: pass --inventory FILE"
            " (or set FLEET_INVENTORY)"
        ) from None
    return selected if shard is None else share(selected, *shard)


def open_store(path: Path | None) -> Store:
    return Store(path or paths.default_store())


def open_config(path: Path | None) -> Config:
    """The configuration, its warnings shown on stderr: they do not stop the command."""
    from fleet.config import load_config

    config = load_config(path)
    for warning in config.warnings:
        output.warn(warning)
    return config


def announce_push(store: Store, influx: InfluxConfig) -> None:
    """Before a push that may wait: a server that does not answer is retried for seconds,
    and a silent wait looks like a hang."""
    from fleet.results.spool import Spool

    pending = Spool(store, influx.sink).count_pending()
    if pending:
        output.say(
            f"InfluxDB: sending {pending} record(s) to {influx.url} (a server that does not"
            f" answer is retried for up to {influx.retry_total_s:g} s)"
        )
