"""`fleet report RUN`: one run as a self-contained HTML page, or a Markdown summary for CI."""

from __future__ import annotations

from pathlib import Path

import click

from fleet.cli.options import open_store, path_option, run_option, store_option, the_run


@click.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@run_option()
@path_option("--output", "-o", dir_okay=False, help="The file to write (default: stdout).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "markdown"]),
    default="html",
    show_default=True,
    help="html: the whole report, one file that fetches nothing; markdown: a short summary"
    " for a CI job page.",
)
@store_option
def report(
    run_id: str | None,
    run_option: str | None,
    output: Path | None,
    fmt: str,
    store_path: Path | None,
) -> None:
    """The report of the run (--run RUN, or RUN; a unique prefix will do; default: the
    latest run): latency with
    its uncertainty, latency against accuracy, memory, each series' trend, regressions,
    failures and provenance."""
    from fleet.errors import ConfigError
    from fleet.results.report_html import build_report, render_html
    from fleet.results.report_markdown import render_markdown

    built = build_report(open_store(store_path), the_run(run_id, run_option))
    text = render_markdown(built) if fmt == "markdown" else render_html(built)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{output}: cannot write the report ({exc.strerror})") from None
    click.echo(f"wrote {output} ({fmt}, run {built.run.run_id}, {len(built.results)} case(s))")
