"""`fleet rerun RUN`: run the cases of an earlier run again, to confirm or clear a regression."""

from __future__ import annotations

from pathlib import Path

import click

from fleet.cli.finish import finish
from fleet.cli.options import (
    config_option,
    devices_option,
    gate_option,
    open_config,
    open_store,
    path_option,
    plan_option,
    store_option,
)


@click.command()
@click.argument("run_id", metavar="RUN")
@devices_option("Only those of the run's devices that these groups, hosts or tags select.")
@path_option("--inventory", help="Inventory file or folder (default: the one the run used).")
@store_option
@plan_option
@gate_option("rerun")
@config_option
def rerun(
    run_id: str,
    devices: str | None,
    inventory: Path | None,
    store_path: Path | None,
    plan_only: bool,
    gate: bool | None,
    config_path: Path | None,
) -> None:
    """Run exactly the cases of RUN (a run id or a unique prefix of one) again: the same suite,
    artifacts (by sha256), settings and agent, on its devices; refused when any of them
    changed. Exit codes as `fleet run`."""
    from fleet.plan import describe
    from fleet.rerun import plan_rerun
    from fleet.results.stream import streaming
    from fleet.runner import run_suite

    def progress(device: str, message: str) -> None:
        click.echo(f"[{device}] {message}", err=True)

    store = open_store(store_path)
    again = plan_rerun(store, run_id, inventory=inventory, devices=devices, progress=progress)
    if plan_only:
        click.echo("\n".join(describe(again.plan)))
        return
    config = open_config(config_path)
    suite = again.plan.suite
    click.echo(f"rerun of {again.run.run_id}: {again.cases} case(s) of {suite.name}", err=True)
    with streaming(store, config.influx, say=lambda line: click.echo(line, err=True)) as stream:
        outcome = run_suite(again.plan, store, parallel=again.spec.parallel, progress=progress)
    store.set_run_spec(outcome.run_id, again.spec.to_json())
    finish(store, outcome, suite, gate, stream, rerun_of=again.run.run_id)
