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
from fleet.results.store import Store
from fleet.runlock import IF_BUSY

if TYPE_CHECKING:
    from fleet.config import Config
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
) -> Callable[[FC], FC]:
    return click.option("--devices", help=help)


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
    help="SQLite results store (default: $FLEET_HOME/results.sqlite, XDG).",
)
config_option = path_option(
    "--config",
    "config_path",
    help="fleet.toml with the InfluxDB settings (default: ./fleet.toml);"
    " FLEET_INFLUX_* variables override it.",
)
parallel_option = click.option(
    "--parallel",
    type=click.IntRange(min=1),
    help="At most this many devices at a time (default: every selected device at once).",
)
plan_option = click.option("--plan", "plan_only", is_flag=True, help="Print the plan and stop.")


def select_devices(
    inventory: Path | None, devices: str | None, shard: tuple[int, int] | None
) -> list[Device]:
    """The devices that --inventory, --devices and --shard select."""
    from fleet.inventory import load_inventory, share

    selectors = (devices or ("all" if inventory else "local")).split(",")
    selected = load_inventory(inventory).select(selectors)
    return selected if shard is None else share(selected, *shard)


def open_store(path: Path | None) -> Store:
    return Store(path or paths.default_store())


def open_config(path: Path | None) -> Config:
    """The configuration, its warnings shown on stderr: they do not stop the command."""
    from fleet.config import load_config

    config = load_config(path)
    for warning in config.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    return config
