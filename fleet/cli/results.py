"""`fleet results ...`: look at stored results, compare hardware, push to InfluxDB, export."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fleet.cli import output
from fleet.cli.options import (
    announce_push,
    config_option,
    json_option,
    open_config,
    open_store,
    path_option,
    run_option,
    store_option,
    the_run,
)
from fleet.results.compare import (
    compare,
    compare_document,
    comparison_table,
    record_document,
    run_document,
    run_table,
    runs_document,
    runs_table,
)
from fleet.results.export import FORMATS, export
from fleet.results.record import TAG_KEYS


@click.group()
def results() -> None:
    """Look at stored results, compare devices, push to InfluxDB, export."""


@results.command("list")
@store_option
@json_option
def list_runs(store_path: Path | None, as_json: bool) -> None:
    """The runs in the store, oldest first."""
    store = open_store(store_path)
    if as_json:
        output.echo_json(runs_document(store))
    else:
        click.echo(runs_table(store))


@results.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@run_option()
@store_option
@json_option
def show(
    run_id: str | None, run_option: str | None, store_path: Path | None, as_json: bool
) -> None:
    """The results of the run (--run RUN, or RUN; a unique prefix will do; default: the
    latest run)."""
    store, run = open_store(store_path), the_run(run_id, run_option)
    if as_json:
        output.echo_json(run_document(store, run))
    else:
        click.echo(run_table(store, run))


@results.command("compare")
@click.option("--by", type=click.Choice(TAG_KEYS), default="device", show_default=True)
@click.option("--model", default=None, help="Only this model.")
@click.option(
    "--metric",
    default="latency_ms_p50",
    show_default=True,
    help="A number the results carry (docs/measurement.md).",
)
@run_option("Only this run (default: the latest result of each cell, from any run).")
@store_option
@json_option
def compare_runs(
    by: str,
    model: str | None,
    metric: str,
    run_option: str | None,
    store_path: Path | None,
    as_json: bool,
) -> None:
    """One row per model variant, one column per device (or other tag)."""
    found = compare(open_store(store_path), by, model, metric, run_option)
    if as_json:
        output.echo_json(compare_document(found))
    else:
        click.echo(comparison_table(found))


@results.command()
@config_option
@store_option
def push(config_path: Path | None, store_path: Path | None) -> None:
    """Send every result InfluxDB has not accepted yet; exit 2 if some could not be sent."""
    from fleet.results.influx import push_pending

    config, store = open_config(config_path), open_store(store_path)
    influx = config.require_influx()
    announce_push(store, influx)
    counts, *problems = push_pending(store, influx).lines()
    click.echo(counts)
    for line in problems:
        click.secho(line, fg="red", err=True)
    if problems:
        sys.exit(2)


@results.command("export")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), required=True)
@click.argument("run_id", metavar="[RUN]", required=False)
@run_option()
@path_option("--output", "-o", "output_path", dir_okay=False, help="Default: stdout.")
@store_option
def export_run(
    fmt: str,
    run_id: str | None,
    run_option: str | None,
    output_path: Path | None,
    store_path: Path | None,
) -> None:
    """One run (--run RUN, or RUN) as JSON (every record), CSV (one row per case) or JUnit
    XML (for CI)."""
    text = export(open_store(store_path), fmt, the_run(run_id, run_option))
    if output_path is None:
        click.echo(text, nl=False)
    else:
        output_path.write_text(text)


@results.command("import")
@click.argument("spill", type=click.Path(path_type=Path, dir_okay=False))
@store_option
def import_spill(spill: Path, store_path: Path | None) -> None:
    """Read back SPILL, the file a run on a full store disk kept its results in (running it
    twice adds nothing twice)."""
    store = open_store(store_path)
    added, present = store.import_spill(spill)
    click.echo(f"{added} record(s) from {spill} into {store.path} ({present} already there)")


@results.command("regressions")
@click.option(
    "--since",
    default="7d",
    show_default=True,
    help="Flagged within this long before now: a number and m, h, d or w (30m, 12h, 7d, 2w).",
)
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Every regression and improvement flagged in that time, fixed or not.",
)
@store_option
@json_option
def regressions(since: str, everything: bool, store_path: Path | None, as_json: bool) -> None:
    """The open regressions: flagged by a run's check, and no valid result of that series
    since (a later valid result was judged and not flagged: fixed)."""
    from fleet.regressions.stored import flagged, open_regressions, parse_since, regressions_table

    try:
        since_ns = parse_since(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    store = open_store(store_path)
    if everything:
        found, what = flagged(store, since_ns), "regressions and improvements"
    else:
        found, what = open_regressions(store, since_ns), "open regressions"
    if as_json:
        records = [record_document(r) for r in found]
        output.echo_json({"store": str(store.path), "since": since, "regressions": records})
        return
    click.echo(regressions_table(found, f"{what} flagged in the last {since} ({store.path})"))
