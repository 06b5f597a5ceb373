"""`fleet run SUITE`: run a suite on the selected devices and print the results table."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from fleet import paths
from fleet.cli import show_warnings
from fleet.config import load_config
from fleet.inventory import load_inventory
from fleet.plan import describe, make_plan
from fleet.report import results_table
from fleet.results.store import Store
from fleet.runner import run_suite
from fleet.suite import load_suite


@click.command()
@click.argument("suite_file", type=click.Path(path_type=Path))
@click.option(
    "--inventory",
    type=click.Path(path_type=Path),
    default=os.environ.get("FLEET_INVENTORY"),
    help="Inventory file or folder (default: $FLEET_INVENTORY; without one only `local`).",
)
@click.option(
    "--devices",
    default=None,
    help="Comma-separated groups, hosts or tags (default: `local`, or `all` with an inventory).",
)
@click.option(
    "--store",
    "store_path",
    type=click.Path(path_type=Path),
    default=None,
    help="SQLite results store (default: $FLEET_HOME/results.sqlite, XDG).",
)
@click.option(
    "--parallel", type=int, default=4, show_default=True, help="Devices run at the same time."
)
@click.option("--plan", "plan_only", is_flag=True, help="Print the plan and stop.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="fleet.toml with the InfluxDB settings (default: ./fleet.toml, FLEET_INFLUX_* vars).",
)
def run(
    suite_file: Path,
    inventory: Path | None,
    devices: str | None,
    store_path: Path | None,
    parallel: int,
    plan_only: bool,
    config_path: Path | None,
) -> None:
    """Run SUITE_FILE on the selected devices; exit 0 when every budget holds, 1 when one
    failed, 2 on a device, agent or configuration error."""
    suite = load_suite(suite_file)
    inv = load_inventory(inventory)
    selected = inv.select((devices or ("all" if inventory else "local")).split(","))
    if plan_only:
        click.echo("\n".join(describe(make_plan(suite, selected))))
        return
    config = load_config(config_path)
    show_warnings(config)
    store = Store(store_path or paths.default_store())

    def progress(device: str, message: str) -> None:
        click.echo(f"[{device}] {message}", err=True)

    outcome = run_suite(
        suite, selected, store, parallel=parallel, report=progress, influx=config.influx
    )
    click.echo(results_table(outcome.records))
    for _device, error in sorted(outcome.device_errors.items()):
        click.secho(f"error: {error}", fg="red", err=True)
    click.echo(f"run {outcome.run_id}: {len(outcome.results)} result(s) in {store.path}")
    if outcome.push is not None:  # a failed push leaves results spooled, not the run failed
        for line in outcome.push.lines():
            click.echo(line, err=True)
    sys.exit(outcome.exit_code)
