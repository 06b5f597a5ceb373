"""Plain-text tables for the terminal: the one renderer, its cells, and the results table."""

from __future__ import annotations

import time
from collections.abc import Sequence

from fleet.results.record import Record, tag


def format_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    title: str | None = None,
    empty: str = "(nothing yet)",
) -> str:
    """Aligned plain text: numbers to the right, words to the left; the title above;
    `empty` in place of a table without rows."""
    head = [] if title is None else [title]
    if not rows:
        return "\n".join([*head, empty])
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


def verdict(record: Record) -> str:
    """The result in words, the same in the table and in a run's progress: "pass",
    "FAIL", "pass (noisy)" (measured, but not valid), or the status ("TIMEOUT")."""
    if record.status != "ok":
        words = record.status.upper()
    elif record.fields.get("passed") is False:
        words = "FAIL"
    else:
        words = "pass"
    return words + (" (noisy)" if record.fields.get("valid") is False else "")


def noisy_reasons(record: Record) -> str:
    """Why a result is marked not valid (the agent's `invalid_reasons`); "" when it is valid."""
    if record.fields.get("valid") is not False:
        return ""
    return str(record.fields.get("invalid_reasons", "")) or "marked not valid"


def result_line(record: Record) -> str:
    """A measured case as a run's progress says it: p50, the verdict, and why."""
    why = [str(record.fields.get("budget_failures", "")), noisy_reasons(record)]
    because = "; ".join(w for w in why if w)
    return f"p50 {number(record, 'latency_ms_p50')} ms {verdict(record)}" + (
        f": {because}" if because else ""
    )


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


# Shown only where a result has them (column, field, format).
GPU_COLUMNS = (
    ("compute p50", "compute_latency_ms_p50", ".3f"),
    ("compute p95", "compute_latency_ms_p95", ".3f"),
    ("build ms", "engine_build_ms", ".0f"),
    ("GPU MB", "gpu_memory_peak_mb", ".0f"),
)


def results_table(
    records: Sequence[Record], title: str | None = None, empty: str = "(nothing yet)"
) -> str:
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
    # A GPU case's figures, where any result has them: compute-only latency beside the
    # end-to-end p50/p95, the engine build apart from them, and the model's GPU memory.
    gpu = [(c, f, fmt) for c, f, fmt in GPU_COLUMNS if any(f in r.fields for r in results)]
    columns[columns.index("p95 ms") + 1 : columns.index("p95 ms") + 1] = [c for c, _, _ in gpu]
    rows, notes = [], _Notes()
    for r in sorted(results, key=lambda r: tuple(tag(r.tags, k) for k in _ORDER)):
        row = [
            r.tags.get("device", "?"),
            r.tags.get("model", "?"),
            tag(r.tags, "variant") or "?",
            *([r.tags.get("shape", "-")] if shaped else []),
            f"{r.tags.get('runtime', '?')}/{r.tags.get('provider', '?')}",
            number(r, "latency_ms_p50"),
            number(r, "latency_ms_p95"),
            *(number(r, name, fmt) for _, name, fmt in gpu),
            number(r, "peak_rss_mb", ".0f"),
            number(r, "accuracy_top1", ".4f"),
            number(r, "accuracy_drop_pp", "+.2f"),
            verdict(r),
            notes.mark(noisy_reasons(r)),
        ]
        rows.append(row)
    if not notes:  # the column is there only when a row has a note
        return format_table(columns, [row[:-1] for row in rows], title, empty)
    return "\n".join([format_table([*columns, "why"], rows, title), *notes.lines()])


class _Notes:
    """Footnotes under a table: one number per distinct text, in order of first use."""

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self.numbers)

    def mark(self, text: str) -> str:
        if not text:
            return ""
        return f"[{self.numbers.setdefault(text, len(self.numbers) + 1)}]"

    def lines(self) -> list[str]:
        return [f"[{n}] noisy: {text}" for text, n in self.numbers.items()]


# Rows by device and model, as before variants had a tag; within them in the run's order.
_ORDER = ("device", "model")
