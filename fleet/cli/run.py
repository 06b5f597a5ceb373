"""`fleet run SUITE`: run a suite on the selected devices and print the results table."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fleet.cli.options import config_option, open_config, open_store, store_option
from fleet.results.tables import results_table


@click.command()
@click.argument("suite_file", type=click.Path(path_type=Path))
@click.option(
    "--inventory",
    type=click.Path(path_type=Path),
    envvar="FLEET_INVENTORY",
    show_envvar=True,
    help="Inventory file or folder (without one, only `local`).",
)
@click.option(
    "--devices",
    default=None,
    help="Comma-separated groups, hosts or tags (default: `local`, or `all` with an inventory).",
)
@store_option
@click.option(
    "--parallel", type=int, default=4, show_default=True, help="Devices run at the same time."
)
@click.option("--plan", "plan_only", is_flag=True, help="Print the plan and stop.")
@config_option
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
    from fleet.inventory import load_inventory
    from fleet.plan import describe, make_plan
    from fleet.runner import run_suite
    from fleet.suite import load_suite

    suite = load_suite(suite_file)
    inv = load_inventory(inventory)
    selected = inv.select((devices or ("all" if inventory else "local")).split(","))
    plan = make_plan(suite, selected)
    if plan_only:
        click.echo("\n".join(describe(plan)))
        return
    config = open_config(config_path)
    store = open_store(store_path)

    def progress(device: str, message: str) -> None:
        click.echo(f"[{device}] {message}", err=True)

    outcome = run_suite(plan, store, parallel=parallel, progress=progress)
    click.echo(results_table(outcome.records))
    for _device, error in sorted(outcome.device_errors.items()):
        click.secho(f"error: {error}", fg="red", err=True)
    click.echo(f"run {outcome.run_id}: {len(outcome.results)} result(s) in {store.path}")
    if config.influx is not None:  # a failed push leaves results spooled, not the run failed
        from fleet.results.influx import push_pending

        for line in push_pending(store, config.influx).lines():
            click.echo(line, err=True)
    sys.exit(outcome.exit_code)
