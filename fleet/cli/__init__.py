"""The `fleet` command: parse, call one library function, print.

Every expected failure (FleetError) is one red line and exit 2; anything else is a bug:
its traceback goes to a debug log and the user gets a pointer to it (exit 3).
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from fleet import __version__, paths
from fleet.config import Config
from fleet.errors import FleetError


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FleetError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.secho("interrupted; every result received so far is in the store", err=True)
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except Exception as exc:
            log = paths.data_dir() / "debug.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("a") as handle:
                handle.write(traceback.format_exc() + "\n")
            click.secho(
                f"unexpected error: {exc!r}; traceback in {log} — please report it",
                fg="red",
                err=True,
            )
            sys.exit(3)


def show_warnings(config: Config) -> None:
    for warning in config.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)


@click.group(cls=_Main)
@click.version_option(__version__, prog_name="fleet")
def main() -> None:
    """Run ML inference suites on a fleet of devices and compare the results."""


def _register() -> None:
    from fleet.cli.convert import convert, model
    from fleet.cli.lab import lab
    from fleet.cli.results import results
    from fleet.cli.run import run

    for command in (run, lab, results, convert, model):
        main.add_command(command)


_register()
