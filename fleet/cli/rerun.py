"""`fleet rerun RUN`: run the cases of an earlier run again, to confirm or clear a regression."""

from __future__ import annotations

from pathlib import Path

import click

from fleet.cli import output
from fleet.cli.finish import finish
from fleet.cli.options import (
    config_option,
    devices_option,
    gate_option,
    json_option,
    open_config,
    open_store,
    path_option,
    plan_option,
    run_option,
    store_option,
    the_run,
)


@click.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@run_option("The run to do again (or RUN): its id or a unique prefix of it.")
@devices_option(
    "Only those of the run's devices that these groups, hosts or tags select.", envvar=None
)
@path_option("--inventory", help="Inventory file or folder (default: the one the run used).")
@store_option
@plan_option
@gate_option("rerun")
@config_option
@json_option
def rerun(
    run_id: str | None,
    run_option: str | None,
    devices: str | None,
    inventory: Path | None,
    store_path: Path | None,
    plan_only: bool,
    gate: bool | None,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Run exactly the cases of RUN (a run id or a unique prefix of one) again: the same suite,
    artifacts (by sha256), settings and agent, on its devices; refused when any of them
    changed. Exit codes as `fleet run`."""
    from fleet.cli.documents import plan_document
    from fleet.cli.live_view import watching
    from fleet.plan import describe
    from fleet.rerun import plan_rerun
    from fleet.results.stream import streaming
    from fleet.runner import run_suite

    def progress(device: str, message: str) -> None:
        output.say(f"[{device}] {message}")

    run = the_run(run_id, run_option)
    if run is None:
        raise click.UsageError("name the run to do again: fleet rerun RUN (or --run RUN)")
    store = open_store(store_path)
    again = plan_rerun(store, run, inventory=inventory, devices=devices, progress=progress)
    if plan_only:
        if as_json:
            output.echo_json(plan_document(again.plan))
        else:
            click.echo("\n".join(describe(again.plan)))
        return
    config = open_config(config_path)
    suite = again.plan.suite
    output.say(f"rerun of {again.run.run_id}: {again.cases} case(s) of {suite.name}")
    with streaming(store, config.influx, say=output.say) as stream, watching(again.plan) as view:
        outcome = run_suite(again.plan, store, parallel=again.spec.parallel, progress=view)
    store.set_run_spec(outcome.run_id, again.spec.to_json())
    finish(store, outcome, suite, gate, stream, rerun_of=again.run.run_id, as_json=as_json)
