"""`fleet results ...`: look at stored results, compare hardware, push to InfluxDB, export."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fleet.cli.options import config_option, open_config, open_store, store_option
from fleet.results.compare import compare_table, run_table, runs_table
from fleet.results.export import FORMATS, export
from fleet.results.record import TAG_KEYS


@click.group()
def results() -> None:
    """Look at stored results, compare devices, push to InfluxDB, export."""


@results.command("list")
@store_option
def list_runs(store_path: Path | None) -> None:
    """The runs in the store, oldest first."""
    click.echo(runs_table(open_store(store_path)))


@results.command()
@click.argument("run_id", required=False)
@store_option
def show(run_id: str | None, store_path: Path | None) -> None:
    """The results of RUN_ID (a unique prefix will do; default: the latest run)."""
    click.echo(run_table(open_store(store_path), run_id))


@results.command()
@click.option("--by", type=click.Choice(TAG_KEYS), default="device", show_default=True)
@click.option("--model", default=None, help="Only this model.")
@click.option("--metric", default="latency_ms_p50", show_default=True, help="Any result field.")
@click.option("--run", "run_id", default=None, help="Only this run (default: latest per cell).")
@store_option
def compare(
    by: str, model: str | None, metric: str, run_id: str | None, store_path: Path | None
) -> None:
    """One row per model variant, one column per device (or other tag)."""
    click.echo(compare_table(open_store(store_path), by, model, metric, run_id))


@results.command()
@config_option
@store_option
def push(config_path: Path | None, store_path: Path | None) -> None:
    """Send every result InfluxDB has not accepted yet; exit 2 if some could not be sent."""
    from fleet.results.influx import push_pending

    config = open_config(config_path)
    report = push_pending(open_store(store_path), config.require_influx())
    counts, *problems = report.lines()
    click.echo(counts)
    for line in problems:
        click.secho(line, fg="red", err=True)
    if problems:
        sys.exit(2)


@results.command("export")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), required=True)
@click.option("--run", "run_id", default=None, help="Run id or unique prefix (default: latest).")
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Default: stdout.",
)
@store_option
def export_run(fmt: str, run_id: str | None, output: Path | None, store_path: Path | None) -> None:
    """One run as JSON (every record), CSV (one row per case) or JUnit XML (for CI)."""
    text = export(open_store(store_path), fmt, run_id)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
