"""The options several commands take, defined once, and what the CLI opens with them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from fleet import paths
from fleet.results.store import Store

if TYPE_CHECKING:
    from fleet.config import Config

inventory_option = click.option(
    "--inventory",
    type=click.Path(path_type=Path),
    envvar="FLEET_INVENTORY",
    show_envvar=True,
    help="Inventory file or folder (without one, only `local`).",
)
devices_option = click.option(
    "--devices",
    default=None,
    help="Comma-separated groups, hosts or tags (default: `local`, or `all` with an inventory).",
)
store_option = click.option(
    "--store",
    "store_path",
    type=click.Path(path_type=Path),
    default=None,
    help="SQLite results store (default: $FLEET_HOME/results.sqlite, XDG).",
)

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="fleet.toml with the InfluxDB settings (default: ./fleet.toml);"
    " FLEET_INFLUX_* variables override it.",
)


def open_store(path: Path | None) -> Store:
    return Store(path or paths.default_store())


def open_config(path: Path | None) -> Config:
    """The configuration, its warnings shown on stderr: they do not stop the command."""
    from fleet.config import load_config

    config = load_config(path)
    for warning in config.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    return config
