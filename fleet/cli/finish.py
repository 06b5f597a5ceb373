"""The end of `fleet run` and `fleet rerun`, once every result is stored: the results
table (or the JSON), the regression check, the push of what streaming left, and the exit
code."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn

import click

from fleet.cli import output
from fleet.cli.options import announce_push
from fleet.errors import ConfigError
from fleet.results.compare import no_results, run_document
from fleet.results.tables import results_table

if TYPE_CHECKING:
    from fleet.regressions.check import Check
    from fleet.results.store import Store
    from fleet.results.stream import Stream
    from fleet.runner import RunOutcome
    from fleet.suite import Regressions, Suite


def finish(
    store: Store,
    outcome: RunOutcome,
    suite: Suite,
    gate: bool | None,
    stream: Stream,
    rerun_of: str = "",
    as_json: bool = False,
) -> NoReturn:
    """Print the results and each device's error; judge the run against each series'
    baseline (stored, then pushed) unless it was stopped; push the rest; exit."""
    exit_code, judged = outcome.exit_code, []
    if outcome.stopped is None:
        from fleet.regressions.check import check_run, gating

        rules, gated = suite.regressions, gating(suite.regressions, gate)
        check = check_run(store, outcome.run_id, rules, gate=gated)
        flagged = any(v.flagged for v in check.verdicts)
        if flagged and rules is not None and rules.confirm and not rerun_of:
            check = _confirmed(store, check, rules)
        exit_code, judged = check.exit_code(exit_code), check.lines()
        if exit_code != outcome.exit_code:  # the gate failed the run: the store says so
            store.finish_run(outcome.run_id, exit_code)
    if as_json:
        output.echo_json(run_document(store, outcome.run_id))
    else:
        empty = no_results(store.find_run(outcome.run_id))
        click.echo(results_table(outcome.records, empty=empty))
    # After the table, where the eye lands: the progress lines only named the failure.
    for _device, error in sorted(outcome.device_errors.items()):
        output.error(str(error))
    of = f" (rerun of {rerun_of})" if rerun_of else ""
    ran = f"run {outcome.run_id}{of}: {len(outcome.results)} result(s) in {store.path}"
    if as_json:  # stdout holds the one document
        output.say(ran)
    elif not output.quiet():
        click.echo(ran)
    for line in judged:  # -q keeps them when the gate failed the run
        (output.say if exit_code == outcome.exit_code else output.error)(line)
    if stream.config is not None:
        announce_push(store, stream.config)
    report = stream.push_rest()  # what streaming left; a failed push leaves it spooled
    if report:
        counts, *problems = report.lines()
        output.say(counts)
        for line in problems:
            output.error(line)
    sys.exit(exit_code)


def _confirmed(store: Store, check: Check, rules: Regressions) -> Check:
    """The check once the cases of its regressions and improvements were measured again
    (`regressions.confirm`)."""
    from fleet.cli.live_view import watching
    from fleet.rerun import Rerun, confirm
    from fleet.runner import run_suite

    def again(rerun: Rerun) -> RunOutcome:
        cases = f"{rerun.cases} case(s) with a regression or improvement"
        output.say(f"confirming: {cases} of run {check.run_id} measured again")
        with watching(rerun.plan) as progress:
            return run_suite(rerun.plan, store, parallel=rerun.spec.parallel, progress=progress)

    try:
        return confirm(store, check, rules, again)
    except ConfigError as exc:  # the suite or agent changed since: the first check stands
        output.error(f"regressions not confirmed: {exc}")
        return check
