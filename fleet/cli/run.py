"""`fleet run SUITE`: run a suite on the selected devices and print the results table."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fleet.cli.options import (
    config_option,
    devices_option,
    inventory_option,
    open_config,
    open_store,
    store_option,
)
from fleet.patience import Patience
from fleet.results.tables import results_table
from fleet.runlock import DEFAULT_TIMEOUT_S, IF_BUSY, exclusive


class _Shard(click.ParamType):  # type: ignore[type-arg]
    name = "K/N"

    def convert(self, value: str, param: object, ctx: object) -> tuple[int, int]:
        k, _, n = str(value).partition("/")
        if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
            self.fail(f"{value!r}: use K/N with 1 <= K <= N, e.g. 2/4")
        return int(k), int(n)


SHARD = _Shard()


@click.command()
@click.argument("suite_file", type=click.Path(path_type=Path))
@inventory_option
@devices_option
@store_option
@click.option(
    "--parallel",
    type=click.IntRange(min=1),
    default=None,
    help="At most this many devices at a time (default: every selected device at once).",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0, max=20),
    default=Patience.retries,
    show_default=True,
    help="Tries again after a connection failure before any case started (1, 2, 4 ... s).",
)
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0, max=86_400),
    default=Patience.wait_s,
    show_default=True,
    help="Seconds to wait for a device another run holds.",
)
@click.option(
    "--shard",
    type=SHARD,
    default=None,
    help="K/N: run only the K-th of N shares of the devices (the same device, the same share).",
)
@click.option("--plan", "plan_only", is_flag=True, help="Print the plan and stop.")
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
@click.option(
    "--if-busy",
    type=click.Choice(IF_BUSY),
    default=None,
    help="With --exclusive, when another run holds the lock: wait for it (the default), or"
    " skip this run with one line naming the holder and exit 0.",
)
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0, max=7 * 86_400),
    default=None,
    metavar="SECONDS",
    help=f"With --exclusive: the longest wait for the lock, then exit 2 (default"
    f" {DEFAULT_TIMEOUT_S:g} s).",
)
@click.option(
    "--gate/--no-gate",
    default=None,
    help="Fail the run (exit 1) on a regression against the baseline (default: on when the"
    " suite declares `regressions:`).",
)
@config_option
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
) -> None:
    """Run SUITE_FILE on the selected devices; exit 0 when every budget holds, 1 when one
    failed (or, gated, a series regressed), 2 on a device, agent or configuration error."""
    from fleet.inventory import load_inventory, share
    from fleet.plan import describe, make_plan
    from fleet.runner import run_suite
    from fleet.suite import load_suite

    if lock_name is None and (if_busy or lock_timeout is not None):
        raise click.UsageError("--if-busy and --lock-timeout go with --exclusive [NAME]")
    suite = load_suite(suite_file)
    inv = load_inventory(inventory)
    selected = inv.select((devices or ("all" if inventory else "local")).split(","))
    if shard is not None:
        selected = share(selected, *shard)
    plan = make_plan(suite, selected)
    if plan_only:
        click.echo("\n".join(describe(plan)))
        return
    config = open_config(config_path)
    store = open_store(store_path)

    def progress(device: str, message: str) -> None:
        click.echo(f"[{device}] {message}", err=True)

    patience = Patience(retries=retries, wait_s=wait_s)
    with exclusive(
        lock_name,
        suite.name,
        if_busy="skip" if if_busy == "skip" else "wait",
        timeout_s=DEFAULT_TIMEOUT_S if lock_timeout is None else lock_timeout,
        say=lambda line: click.echo(line, err=True),
    ) as held:
        if not held:
            return  # skipped: one line on stderr named the holder; a skip exits 0
        from fleet.rerun import run_spec
        from fleet.results.stream import streaming

        spec = run_spec(suite, inventory, devices, parallel)  # what `fleet rerun` needs
        # Results go to InfluxDB as they come; the end of the run sends what is left.
        with streaming(store, config.influx, say=lambda line: click.echo(line, err=True)) as stream:
            outcome = run_suite(
                plan, store, parallel=parallel, patience=patience, progress=progress
            )
        store.set_run_spec(outcome.run_id, spec.to_json())
        click.echo(results_table(outcome.records))
        for _device, error in sorted(outcome.device_errors.items()):
            click.secho(f"error: {error}", fg="red", err=True)
        click.echo(f"run {outcome.run_id}: {len(outcome.results)} result(s) in {store.path}")
        exit_code = outcome.exit_code
        if outcome.stopped is None:  # judged against each series' baseline, stored, then pushed
            from fleet.regressions import check_run, gating

            rules, gated = suite.regressions, gating(suite.regressions, gate)
            check = check_run(store, outcome.run_id, rules, gate=gated)
            for line in check.lines():
                click.echo(line, err=True)
            exit_code = check.exit_code(exit_code)
        report = stream.push_rest()  # what streaming left; a failed push leaves it spooled
        for line in report.lines() if report else []:
            click.echo(line, err=True)
        sys.exit(exit_code)
