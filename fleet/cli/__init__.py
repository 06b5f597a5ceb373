"""The `fleet` command: parse, call one library function, print.

A command imports the heavy parts of the library it calls (numpy, onnx, paramiko,
influxdb_client, PyYAML come with them) inside its function, so that `fleet --help` loads
little more than click: well under the 0.3 s target (bench/cli_startup.py, docs/benchmarks.md;
tests/test_cli_startup.py keeps them out).

Every expected failure (FleetError) is one red line and exit 2; anything else is a bug:
its traceback goes to a debug log and the user gets a pointer to it (exit 3).
"""

from __future__ import annotations

import signal
import sys
import traceback
from typing import Any

import click

from fleet import __version__, paths
from fleet.cli import output
from fleet.errors import FleetError, Terminated


def _terminate(number: int, frame: object) -> None:
    raise Terminated


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        signal.signal(signal.SIGTERM, _terminate)
        try:
            return super().invoke(ctx)
        except FleetError as exc:
            output.error(str(exc))
            sys.exit(2)
        except KeyboardInterrupt as exc:
            click.secho("interrupted; every result received so far is in the store", err=True)
            sys.exit(exc.exit_code if isinstance(exc, Terminated) else 130)
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
        finally:
            output.reset()


@click.group(cls=_Main, context_settings={"help_option_names": output.HELP_OPTIONS})
@click.version_option(__version__, prog_name="fleet")
def main() -> None:
    """Run ML inference suites on a fleet of devices and compare the results."""


def _register() -> None:
    from fleet.cli.baseline import baseline
    from fleet.cli.convert import convert, model
    from fleet.cli.devices import devices
    from fleet.cli.lab import lab
    from fleet.cli.report import report
    from fleet.cli.rerun import rerun
    from fleet.cli.results import results
    from fleet.cli.run import run
    from fleet.cli.schedule import schedule

    for command in (run, devices, lab, results, baseline, convert, model, schedule, report, rerun):
        main.add_command(command)
    _habits(main)


def _habits(command: click.Command) -> None:
    """What every command takes, added in one place: -h as well as --help, -v and -q, and
    with -v a line for each option read from the environment."""
    command.context_settings.setdefault("help_option_names", output.HELP_OPTIONS)
    command.params.extend(output.verbosity_options())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _habits(sub)
    elif command.callback is not None:
        command.callback = output.tell_sources(command.callback)


_register()
