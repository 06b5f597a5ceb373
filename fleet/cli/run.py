"""`fleet run SUITE`: run a suite on the selected devices and print the results table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from fleet.cli import output
from fleet.cli.finish import finish
from fleet.cli.options import (
    FC,
    config_option,
    devices_option,
    gate_option,
    if_busy_option,
    inventory_option,
    json_option,
    lock_timeout_option,
    open_config,
    open_store,
    parallel_option,
    plan_option,
    select_devices,
    shard_option,
    store_option,
)
from fleet.patience import Patience
from fleet.runlock import DEFAULT_TIMEOUT_S, exclusive


def _patience_option(
    *decls: str, kind: click.IntRange | click.FloatRange, default: float, help: str
) -> Callable[[FC], FC]:
    """How patient the run is with its devices (fleet.patience): the default is shown."""
    return click.option(*decls, type=kind, default=default, show_default=True, help=help)


@click.command()
@click.argument("suite_file", type=click.Path(path_type=Path))
@inventory_option
@devices_option()
@store_option
@parallel_option
@_patience_option(
    "--retries",
    kind=click.IntRange(min=0, max=20),
    default=Patience.retries,
    help="Tries again after a connection failure before any case started (1, 2, 4 ... s).",
)
@_patience_option(
    "--wait",
    "wait_s",
    kind=click.FloatRange(min=0, max=86_400),
    default=Patience.wait_s,
    help="Seconds to wait for a device another run holds.",
)
@shard_option(
    "K/N: run only the K-th of N shares of the devices (the same device, the same share)."
)
@plan_option
@click.option(
    "--exclusive",
    "lock_name",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[NAME]",
    help="Hold the run lock NAME (default: the suite's name; a bare --exclusive goes after"
    " SUITE_FILE) for the run: runs holding the same lock never overlap (`fleet schedule`).",
)
@if_busy_option(
    "With --exclusive, when another run holds the lock: wait for it (the default), or"
    " skip this run with one line naming the holder and exit 0."
)
@lock_timeout_option(
    f"With --exclusive: the longest wait for the lock, then exit 2 (default"
    f" {DEFAULT_TIMEOUT_S:g} s)."
)
@gate_option("run")
@config_option
@json_option
def run(
    suite_file: Path,
    inventory: Path | None,
    devices: str | None,
    store_path: Path | None,
    parallel: int | None,
    retries: int,
    wait_s: float,
    shard: tuple[int, int] | None,
    plan_only: bool,
    lock_name: str | None,
    if_busy: str | None,
    lock_timeout: float | None,
    config_path: Path | None,
    gate: bool | None,
    as_json: bool,
) -> None:
    """Run SUITE_FILE on the selected devices; exit 0 when every budget holds, 1 when one
    failed (or, gated, a series regressed), 2 on a device, agent or configuration error."""
    from fleet.cli.documents import plan_document
    from fleet.plan import describe, make_plan
    from fleet.runner import run_suite
    from fleet.suite import load_suite

    if lock_name is None and (if_busy or lock_timeout is not None):
        raise click.UsageError("--if-busy and --lock-timeout go with --exclusive [NAME]")
    suite = load_suite(suite_file)
    plan = make_plan(suite, select_devices(inventory, devices, shard))
    if plan_only:
        if as_json:
            output.echo_json(plan_document(plan))
        else:
            click.echo("\n".join(describe(plan)))
        return
    if not any(dp.cases for dp in plan.devices):  # an empty shard of a CI matrix, say
        where = f" in shard {shard[0]}/{shard[1]}" if shard else ""
        output.say(f"nothing to run: no device{where} has a case of {suite.name}")
        if as_json:
            output.echo_json({"run": None, "results": []})
        return
    config = open_config(config_path)
    store = open_store(store_path)
    patience = Patience(retries=retries, wait_s=wait_s)
    with exclusive(
        lock_name,
        suite.name,
        if_busy="skip" if if_busy == "skip" else "wait",
        timeout_s=DEFAULT_TIMEOUT_S if lock_timeout is None else lock_timeout,
        say=output.say,
    ) as held:
        if not held:
            return  # skipped: one line on stderr named the holder; a skip exits 0
        from fleet.cli.live_view import watching
        from fleet.rerun import run_spec
        from fleet.results.stream import streaming

        spec = run_spec(suite, inventory, devices, parallel)  # what `fleet rerun` needs
        # Results go to InfluxDB as they come; the end of the run sends what is left.
        with streaming(store, config.influx, say=output.say) as stream, watching(plan) as progress:
            outcome = run_suite(
                plan, store, parallel=parallel, patience=patience, progress=progress
            )
        store.set_run_spec(outcome.run_id, spec.to_json())
        finish(store, outcome, suite, gate, stream, as_json=as_json)
