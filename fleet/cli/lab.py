"""`fleet lab up|down|status`: simulated devices on this machine."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fleet.cli import output
from fleet.cli.options import json_option

if TYPE_CHECKING:
    from fleet.lab import LabDevice


@click.group()
def lab() -> None:
    """Simulated devices on this machine, each a real sshd (for trying fleet and its tests)."""


_DIR = click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path),
    default=Path("lab"),
    show_default=True,
    envvar="FLEET_LAB_DIR",
    show_envvar=True,
    help="Folder for the lab's keys, inventory.yaml and known_hosts.",
)


def _device(d: LabDevice) -> dict[str, Any]:
    """A lab device as `--json` gives it: what a script needs to reach it."""
    keys = ("name", "address", "port", "cpus", "memory_mb", "python", "workdir")
    return {key: value for key, value in asdict(d).items() if key in keys}


@lab.command()
@click.option(
    "--count", "-n", type=click.IntRange(min=1), default=3, show_default=True, help="Devices."
)
@click.option("--devices", "old_count", type=click.IntRange(min=1), hidden=True)
@click.option(
    "--python",
    "pythons",
    multiple=True,
    help="Interpreter for the devices' agents, given to each device in turn (repeatable).",
)
@_DIR
@json_option
def up(
    count: int, old_count: int | None, pythons: tuple[str, ...], folder: Path, as_json: bool
) -> None:
    """Start COUNT devices and write DIR/inventory.yaml (group `lab`) and DIR/known_hosts."""
    from fleet import lab as lab_lib

    if old_count is not None:  # `--devices` selects devices everywhere else
        output.warn("`fleet lab up --devices N` is now `--count N`")
        count = old_count
    devices = lab_lib.up(folder, count, list(pythons) or None)
    inventory = folder / "inventory.yaml"
    if as_json:
        output.echo_json({"inventory": str(inventory), "devices": [_device(d) for d in devices]})
        return
    for d in devices:
        memory = f"{d.memory_mb} MB" if d.memory_mb else "no cap (no writable cgroup)"
        click.echo(f"{d.name}  {d.address}:{d.port}  cpu {d.cpus}  memory {memory}")
    click.echo(f"inventory: {inventory}")


@lab.command()
@_DIR
def down(folder: Path) -> None:
    """Stop every device of the lab and everything they started."""
    from fleet import lab as lab_lib

    names = lab_lib.down(folder)
    click.echo(f"stopped {', '.join(names) or 'nothing'}")


@lab.command()
@_DIR
@json_option
def status(folder: Path, as_json: bool) -> None:
    """Show the lab's devices and whether each accepts SSH connections."""
    from fleet import lab as lab_lib

    found = lab_lib.status(folder)
    if as_json:
        devices = [{**_device(d), "up": alive} for d, alive in found]
        output.echo_json({"inventory": str(folder / "inventory.yaml"), "devices": devices})
        return
    for d, alive in found:
        state = click.style("up", fg="green") if alive else click.style("down", fg="red")
        click.echo(f"{d.name}  {d.address}:{d.port}  cpu {d.cpus}  {state}")
