"""Plain-text tables for the terminal."""

from __future__ import annotations

from collections.abc import Sequence

from fleet.results.record import Record


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=False)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=False)).rstrip()
        for line in lines
    )


def _num(record: Record, name: str, fmt: str) -> str:
    value = record.number(name)
    return "-" if value is None else format(value, fmt)


def results_table(records: Sequence[Record]) -> str:
    """One row per device and case: the figures people look at first, and the verdict."""
    rows = []
    for r in sorted(records, key=lambda r: (r.tags.get("device", ""), r.tags.get("model", ""))):
        if r.measurement != "result":
            continue
        if r.status != "ok":
            verdict = r.status.upper()
        elif r.fields.get("passed") is False:
            verdict = "FAIL"
        else:
            verdict = "pass"
        if r.fields.get("valid") is False:
            verdict += " (noisy)"
        rows.append(
            [
                r.tags.get("device", "?"),
                r.tags.get("model", "?"),
                f"{r.tags.get('format', '?')}:{r.tags.get('precision', '?')}",
                r.tags.get("provider", "?"),
                _num(r, "latency_ms_p50", ".3f"),
                _num(r, "latency_ms_p95", ".3f"),
                _num(r, "peak_rss_mb", ".0f"),
                _num(r, "accuracy_top1", ".4f"),
                _num(r, "accuracy_drop_pp", "+.2f"),
                verdict,
            ]
        )
    headers = [
        "device",
        "model",
        "variant",
        "provider",
        "p50 ms",
        "p95 ms",
        "peak MB",
        "top1",
        "drop pp",
        "result",
    ]
    return format_table(headers, rows)
