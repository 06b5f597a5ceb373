"""What every command shares besides its own options: `-h`, `-v`/`-q`, and where lines go.

stdout carries a command's result (a table, or with `--json` one JSON document) and nothing
else, so that `fleet ... --json | jq` works. Everything else goes to stderr: `say` for what
the command is doing (hidden by `-q`), `warn` (hidden by `-q`) and `error` (always shown).
`-v` also shows fleet's log (INFO; `-vv` DEBUG) and where each option's value came from.

The verbosity lives in a module variable as well as in click's context, because `say` is
also called from the threads of a run, which have no click context.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

HELP_OPTIONS = ["-h", "--help"]
_LOG = logging.getLogger("fleet")
_state = {"verbose": 0, "quiet": 0}


class _ClickHandler(logging.Handler):
    """Log records as lines on the stderr of the moment (CliRunner swaps it per call)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"{record.levelname.lower()}: {self.format(record)}", err=True)


def _apply(ctx: click.Context, param: click.Parameter, value: int | bool) -> None:
    """Both `fleet -q run` and `fleet run -q` work: the group's and the command's options
    add up in the context's meta, which click shares along the chain of contexts. An option
    not given changes nothing (`main` resets after each command)."""
    assert param.name in _state
    if not value:
        return
    key = f"fleet.{param.name}"
    ctx.meta[key] = ctx.meta.get(key, 0) + int(value)
    _state[param.name] = ctx.meta[key]
    if _state["verbose"] and _state["quiet"]:
        raise click.UsageError("-v and -q contradict each other; give one of them", ctx)
    configure_logging()


def configure_logging() -> None:
    """fleet's loggers as -v/-q say; without either, Python's defaults (warnings on stderr)."""
    for handler in [h for h in _LOG.handlers if isinstance(h, _ClickHandler)]:
        _LOG.removeHandler(handler)
    if _state["verbose"]:
        _LOG.addHandler(_ClickHandler())
        _LOG.setLevel(logging.DEBUG if _state["verbose"] > 1 else logging.INFO)
    else:
        _LOG.setLevel(logging.ERROR if _state["quiet"] else logging.NOTSET)


def reset() -> None:
    """After a command: the next one (in the same process: tests) starts from the defaults."""
    _state.update(verbose=0, quiet=0)
    configure_logging()


def verbosity_options() -> list[click.Option]:
    """`-v/--verbose` and `-q/--quiet`, for the group and for every command."""
    common: dict[str, Any] = {"expose_value": False, "is_eager": True, "callback": _apply}
    return [
        click.Option(
            ["-v", "--verbose"],
            count=True,
            help="Say more: fleet's log and where each option came from (-vv: debug).",
            **common,
        ),
        click.Option(
            ["-q", "--quiet"],
            is_flag=True,
            help="Print only errors and the result (the table or the JSON).",
            **common,
        ),
    ]


def quiet() -> bool:
    return bool(_state["quiet"])


def say(line: str, **style: Any) -> None:
    """A line about what is going on, on stderr; -q hides it."""
    if not _state["quiet"]:
        click.secho(line, err=True, **style)


def warn(line: str) -> None:
    say(f"warning: {line}", fg="yellow")


def error(line: str) -> None:
    click.secho(f"error: {line}", fg="red", err=True)


def echo_json(document: object) -> None:
    """The one JSON document of a `--json` command, on stdout (its shape: docs/cli.md)."""
    click.echo(json.dumps(document, indent=2, sort_keys=True))


def tell_sources(callback: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps a command: with -v, first say which options came from the environment."""

    @functools.wraps(callback)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        for param in ctx.command.params:
            name = param.name or ""
            if ctx.get_parameter_source(name) is ParameterSource.ENVIRONMENT:
                option = param.opts[0] if param.opts else name
                envvar = param.envvar if isinstance(param.envvar, str) else "the environment"
                _LOG.info("%s %s (from %s)", option, ctx.params.get(name), envvar)
        return callback(*args, **kwargs)

    return wrapped
