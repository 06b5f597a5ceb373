"""`fleet baseline ...`: pin the run that a suite's regression check compares against."""

from __future__ import annotations

from pathlib import Path

import click

from fleet.cli import output
from fleet.cli.options import json_option, open_store, run_option, store_option, the_run


@click.group()
def baseline() -> None:
    """The baseline of the regression check: the last valid results, or a pinned run."""


@baseline.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@run_option("The run to pin (or RUN): its id or a unique prefix of it.")
@store_option
def pin(run_id: str | None, run_option: str | None, store_path: Path | None) -> None:
    """Pin the run (--run RUN, or RUN; a unique prefix will do) as its suite's baseline.

    The suite's later runs are judged against it instead of their recent history; one pin
    per suite, a new one replaces it."""
    named = the_run(run_id, run_option)
    if named is None:
        raise click.UsageError("name the run to pin: fleet baseline pin RUN (or --run RUN)")
    run = open_store(store_path).pin(named)
    click.echo(f"pinned run {run.run_id} as the baseline of suite {run.suite}")


@baseline.command()
@click.argument("suite")
@store_option
def unpin(suite: str, store_path: Path | None) -> None:
    """Judge SUITE against its recent history again."""
    run_id = open_store(store_path).unpin(suite)
    if run_id is None:
        click.echo(f"suite {suite} has no pinned run; it is judged against its recent history")
    else:
        click.echo(f"unpinned run {run_id}; suite {suite} is judged against its recent history")


@baseline.command()
@store_option
@json_option
def show(store_path: Path | None, as_json: bool) -> None:
    """The pinned runs; a suite not listed is judged against its history."""
    from fleet.results.tables import format_table, when

    store = open_store(store_path)
    if as_json:
        pins = [{"suite": s, "run_id": r, "pinned_ns": at} for s, r, at in store.pins()]
        output.echo_json({"store": str(store.path), "pins": pins})
        return
    rows = [[suite, run_id, when(at)] for suite, run_id, at in store.pins()]
    title = f"pinned baselines in {store.path} (other suites: their last valid results)"
    click.echo(format_table(["suite", "run", "pinned (UTC)"], rows, title))
