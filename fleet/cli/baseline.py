"""`fleet baseline ...`: pin the run that a suite's regression check compares against."""

from __future__ import annotations

from pathlib import Path

import click

from fleet.cli.options import open_store, store_option


@click.group()
def baseline() -> None:
    """The baseline of the regression check: the last valid results, or a pinned run."""


@baseline.command()
@click.argument("run_id")
@store_option
def pin(run_id: str, store_path: Path | None) -> None:
    """Pin RUN_ID as its suite's baseline (a unique prefix will do).

    The suite's later runs are judged against it instead of their recent history; one pin
    per suite, a new one replaces it."""
    run = open_store(store_path).pin(run_id)
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
def show(store_path: Path | None) -> None:
    """The pinned runs; a suite not listed is judged against its history."""
    from fleet.results.tables import format_table, when

    store = open_store(store_path)
    rows = [[suite, run_id, when(at)] for suite, run_id, at in store.pins()]
    title = f"pinned baselines in {store.path} (other suites: their last valid results)"
    click.echo(format_table(["suite", "run", "pinned (UTC)"], rows, title))
