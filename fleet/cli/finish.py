"""The end of `fleet run` and `fleet rerun`, once every result is stored: the results
table, the regression check, the push of what streaming left, and the exit code."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn

import click

from fleet.results.tables import results_table

if TYPE_CHECKING:
    from fleet.results.store import Store
    from fleet.results.stream import Stream
    from fleet.runner import RunOutcome
    from fleet.suite import Suite


def finish(
    store: Store,
    outcome: RunOutcome,
    suite: Suite,
    gate: bool | None,
    stream: Stream,
    rerun_of: str = "",
) -> NoReturn:
    """Print the results and each device's error; judge the run against each series'
    baseline (stored, then pushed) unless it was stopped; push the rest; exit."""
    click.echo(results_table(outcome.records))
    for _device, error in sorted(outcome.device_errors.items()):
        click.secho(f"error: {error}", fg="red", err=True)
    of = f" (rerun of {rerun_of})" if rerun_of else ""
    click.echo(f"run {outcome.run_id}{of}: {len(outcome.results)} result(s) in {store.path}")
    exit_code = outcome.exit_code
    if outcome.stopped is None:
        from fleet.regressions.check import check_run, gating

        rules, gated = suite.regressions, gating(suite.regressions, gate)
        check = check_run(store, outcome.run_id, rules, gate=gated)
        for line in check.lines():
            click.echo(line, err=True)
        exit_code = check.exit_code(exit_code)
        if exit_code != outcome.exit_code:  # the gate failed the run: the store says so
            store.finish_run(outcome.run_id, exit_code)
    report = stream.push_rest()  # what streaming left; a failed push leaves it spooled
    for line in report.lines() if report else []:
        click.echo(line, err=True)
    sys.exit(exit_code)
