"""`fleet lab up|down|status`: simulated devices on this machine."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def lab() -> None:
    """Simulated devices on this machine, each a real sshd (for trying fleet and its tests)."""


_DIR = click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path),
    default=Path("lab"),
    show_default=True,
    help="Folder for the lab's keys, inventory.yaml and known_hosts.",
)


@lab.command()
@click.option("--devices", "count", type=int, default=3, show_default=True)
@click.option(
    "--python",
    "pythons",
    multiple=True,
    help="Interpreter for the devices' agents, given to each device in turn (repeatable).",
)
@_DIR
def up(count: int, pythons: tuple[str, ...], folder: Path) -> None:
    """Start COUNT devices and write DIR/inventory.yaml (group `lab`) and DIR/known_hosts."""
    from fleet import lab as lab_lib

    devices = lab_lib.up(folder, count, list(pythons) or None)
    for d in devices:
        memory = f"{d.memory_mb} MB" if d.memory_mb else "no cap (no writable cgroup)"
        click.echo(f"{d.name}  {d.address}:{d.port}  cpu {d.cpus}  memory {memory}")
    click.echo(f"inventory: {folder / 'inventory.yaml'}")


@lab.command()
@_DIR
def down(folder: Path) -> None:
    """Stop every device of the lab and everything they started."""
    from fleet import lab as lab_lib

    names = lab_lib.down(folder)
    click.echo(f"stopped {', '.join(names) or 'nothing'}")


@lab.command()
@_DIR
def status(folder: Path) -> None:
    """Show the lab's devices and whether each accepts SSH connections."""
    from fleet import lab as lab_lib

    for d, alive in lab_lib.status(folder):
        state = click.style("up", fg="green") if alive else click.style("down", fg="red")
        click.echo(f"{d.name}  {d.address}:{d.port}  cpu {d.cpus}  {state}")
