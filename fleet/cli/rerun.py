"""`fleet rerun RUN`: run the cases of an earlier run again, to confirm or clear a regression."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fleet.cli.options import config_option, open_config, open_store, store_option
from fleet.results.tables import results_table


@click.command()
@click.argument("run_id", metavar="RUN")
@click.option(
    "--devices",
    default=None,
    help="Only those of the run's devices that these groups, hosts or tags select.",
)
@click.option(
    "--inventory",
    type=click.Path(path_type=Path),
    default=None,
    help="Inventory file or folder (default: the one the run used).",
)
@store_option
@click.option("--plan", "plan_only", is_flag=True, help="Print the plan and stop.")
@click.option(
    "--gate/--no-gate",
    default=None,
    help="Fail the rerun (exit 1) on a regression against the baseline (default: on when the"
    " suite declares `regressions:`).",
)
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
    from fleet.regressions import check_run, gating
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
    click.echo(results_table(outcome.records))
    for _device, error in sorted(outcome.device_errors.items()):
        click.secho(f"error: {error}", fg="red", err=True)
    click.echo(
        f"run {outcome.run_id} (rerun of {again.run.run_id}): {len(outcome.results)} result(s)"
        f" in {store.path}"
    )
    exit_code = outcome.exit_code
    if outcome.stopped is None:
        check = check_run(
            store, outcome.run_id, suite.regressions, gate=gating(suite.regressions, gate)
        )
        for line in check.lines():
            click.echo(line, err=True)
        exit_code = check.exit_code(exit_code)
    report = stream.push_rest()  # what streaming left; a failed push leaves results spooled
    for line in report.lines() if report else []:
        click.echo(line, err=True)
    sys.exit(exit_code)
