"""What the sections of the HTML report are made of: `e` escapes any text (user data is
never markup), `when` writes a time, `num` a record's field and `verdict_cell` a case's
verdict as escaped cells, and `table` lays such cells out.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from html import escape

from fleet.results.record import Record
from fleet.results.report_model import cell, verdict


def e(value: object) -> str:
    """Escaped text of anything (quotes too: the same helper fills attributes)."""
    return escape(str(value), quote=True)


def when(time_ns: int | None) -> str:
    if not time_ns:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time_ns / 1e9))


def table(
    columns: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()
) -> str:
    """Rows of already escaped cells; `numeric` columns right-aligned."""
    head = "".join(f"<th>{e(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    if not body:
        return '<p class="muted">none</p>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def num(record: Record, name: str, fmt: str = ".4g") -> str:
    return e(cell(record.number(name), fmt))


def verdict_cell(record: Record) -> str:
    outcome = verdict(record)
    css = "good" if outcome == "pass" else ("noisy" if outcome == "noisy" else "bad")
    text = outcome.upper() if outcome not in ("pass", "noisy") else outcome
    return f'<span class="{css}">{e(text)}</span>'
