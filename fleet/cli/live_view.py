"""How `fleet run` shows its progress: a live view of every device when stderr is a terminal
(a row per device with its state and a bar, the overall count), one plain line per event
otherwise (CI logs, pipes). The results table goes to stdout either way, after it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from fleet.artifacts.converter_env import log as converter_log
from fleet.cli import output
from fleet.cli.progress_board import ACTIVE, CONTROLLER, STATES, Board, Row
from fleet.plan import Plan

Progress = Callable[[str, str], None]

_STYLE = {
    "waiting": "dim",
    "done": "green",
    "error": "bold red",
    "retrying": "magenta",
    "busy": "magenta",
}
_BAR_WIDTH = 24
_NAME_WIDTH = 24  # a longer device name is cut
_DETAIL_WIDTH = 12  # the least a detail is given, however narrow the terminal


@contextlib.contextmanager
def watching(plan: Plan) -> Iterator[Progress]:
    """The progress callback for a run of `plan`, shown live or as plain lines; the
    converter environment's build steps come through it too."""
    board = Board(plan)
    console = Console(stderr=True)
    if output.quiet() or not console.is_terminal or console.is_dumb_terminal:
        with _steps_to(lambda device, message: _plain(board, device, message)) as plain:
            yield plain
        return
    live = Live(
        console=console,
        get_renderable=lambda: render(board, console.width, console.height),
        refresh_per_second=4,
        redirect_stdout=False,  # the table's stream: never drawn on
        redirect_stderr=True,  # other lines (InfluxDB, a lock) print above the view
    )

    def progress(device: str, message: str) -> None:
        if board.note(device, message).changed:
            live.refresh()  # every change of state is drawn, however short it was

    with live, _steps_to(progress):
        yield progress


def _plain(board: Board, device: str, message: str) -> None:
    if board.note(device, message).line:
        output.say(f"[{device}] {message}")


@contextlib.contextmanager
def _steps_to(progress: Progress) -> Iterator[Progress]:
    """While the run lasts, the converter environment's log lines are the controller's
    progress (instead of the bare warnings Python prints unconfigured, and its info steps
    that it drops)."""

    class Steps(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            progress(CONTROLLER, record.getMessage())

    handler = Steps(logging.INFO)
    level, propagate = converter_log.level, converter_log.propagate
    converter_log.addHandler(handler)
    converter_log.setLevel(logging.INFO)
    converter_log.propagate = False  # said once, here
    try:
        yield progress
    finally:
        converter_log.removeHandler(handler)
        converter_log.setLevel(level)
        converter_log.propagate = propagate


def render(board: Board, width: int, height: int) -> RenderableType:
    """The view: the conversions, a row per device (as many as the terminal holds: those at
    work and in error first), and the overall count."""
    with board.lock:
        table = Table.grid(padding=(0, 1))
        # A long detail or a narrow terminal cuts only the detail: the name and the state
        # are read at a glance (and matched by scripts that watch the view). Rich would
        # narrow every column alike, so the detail is given what the others leave.
        names = ["conversions" if board.conversions else "", *board.rows]
        fixed = [min(max(map(len, names)), _NAME_WIDTH), max(map(len, STATES)), _BAR_WIDTH]
        for size in fixed:
            table.add_column(no_wrap=True, width=size, overflow="ellipsis")
        detail = max(width - sum(fixed) - len(fixed), _DETAIL_WIDTH)
        table.add_column(no_wrap=True, max_width=detail, overflow="ellipsis")
        if board.conversions:
            _add(table, board.controller, "conversions")
        rows = list(board.rows.values())
        room = max(height - 4, 3)
        if len(rows) > room:
            first = [r for r in rows if r.state in ACTIVE or r.state == "error"][: room - 1]
            rest = [r for r in rows if r not in first]
            rows = first
        else:
            rest = []
        for row in rows:
            _add(table, row, row.name)
        lines: list[RenderableType] = [table]
        if rest:
            counts = ", ".join(
                f"{sum(r.state == s for r in rest)} {s}"
                for s in dict.fromkeys(r.state for r in rest)
            )
            lines.append(Text(f"… {len(rest)} more: {counts}", style="dim"))
        lines.append(Text(board.summary(), style="bold"))
        return Group(*lines)


def _add(table: Table, row: Row, name: str) -> None:
    bar: RenderableType = ""
    if row.fraction is not None:
        bar = ProgressBar(total=1.0, completed=row.fraction, width=_BAR_WIDTH)
    state = Text(row.state, style=_STYLE.get(row.state, "yellow"))
    table.add_row(name, state, bar, row.detail)
