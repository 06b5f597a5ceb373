"""Plain-text tables for the terminal: the one renderer, its cells, and the results table."""

from __future__ import annotations

import time
from collections.abc import Sequence

from fleet.results.record import Record, tag


def format_table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None
) -> str:
    """Aligned plain text: numbers to the right, words to the left; the title above."""
    head = [] if title is None else [title]
    if not rows:
        return "\n".join([*head, "(nothing yet)"])
    cells = [columns, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    numeric = [all(_is_number(row[i]) for row in rows) for i in range(len(columns))]
    lines = [
        "  ".join(
            (c.rjust(w) if right else c.ljust(w))
            for c, w, right in zip(row, widths, numeric, strict=True)
        ).rstrip()
        for row in cells
    ]
    return "\n".join([*head, *lines])


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return cell in ("", "-")
    return True


def when(time_ns: int) -> str:
    """A record's or a run's time as a cell: UTC, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time_ns / 1e9))


def number(record: Record, name: str, fmt: str = ".3f") -> str:
    """The field `name` of `record` as a table cell; "-" where it has none."""
    value = record.number(name)
    return "-" if value is None else format(value, fmt)


def _verdict(record: Record) -> str:
    if record.status != "ok":
        verdict = record.status.upper()
    elif record.fields.get("passed") is False:
        verdict = "FAIL"
    else:
        verdict = "pass"
    return verdict + (" (noisy)" if record.fields.get("valid") is False else "")


RESULT_COLUMNS = (
    "device",
    "model",
    "variant",
    "runtime",
    "p50 ms",
    "p95 ms",
    "peak MB",
    "top-1",
    "drop pp",
    "result",
)


def results_table(records: Sequence[Record], title: str | None = None) -> str:
    """One row per device and case: the figures people look at first, and the verdict.
    The variant is the one converted (`onnx:int8-static`); a `shape` column appears when a
    case's shapes were chosen (a model with open dimensions, a sweep of lengths).

    `fleet run` prints it at the end of a run and `fleet results show` for a stored one.
    """
    results = [r for r in records if r.measurement == "result"]
    shaped = any("shape" in r.tags for r in results)
    columns = list(RESULT_COLUMNS)
    if shaped:
        columns.insert(columns.index("variant") + 1, "shape")
    rows = []
    for r in sorted(results, key=lambda r: tuple(tag(r.tags, k) for k in _ORDER)):
        row = [
            r.tags.get("device", "?"),
            r.tags.get("model", "?"),
            tag(r.tags, "variant") or "?",
            *([r.tags.get("shape", "-")] if shaped else []),
            f"{r.tags.get('runtime', '?')}/{r.tags.get('provider', '?')}",
            number(r, "latency_ms_p50"),
            number(r, "latency_ms_p95"),
            number(r, "peak_rss_mb", ".0f"),
            number(r, "accuracy_top1", ".4f"),
            number(r, "accuracy_drop_pp", "+.2f"),
            _verdict(r),
        ]
        rows.append(row)
    return format_table(columns, rows, title)


# Rows by device and model, as before variants had a tag; within them in the run's order.
_ORDER = ("device", "model")
