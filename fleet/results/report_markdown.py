"""The short Markdown summary of a run, for CI job pages (a GitHub step summary, a GitLab
job's artifacts): pass/fail counts, the regressions and improvements, the largest p50
changes against each series' previous valid result, and the failures. Plain tables without
links; every cell is escaped, since device names, tags and messages are user data and a CI
page renders Markdown and HTML alike.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape

from fleet.results.record import Record
from fleet.results.report_model import FLAG_COLUMNS, Report, cell, flag_cells, variant_label

# The p50 changes listed, worst first.
WORST_CHANGES = 5
# How the summary names an outcome of `verdict` (the others are statuses: timeout, …).
_OUTCOMES = {"fail": "over budget"}
# Longer cells (messages) are cut to this many characters.
CELL_MAX = 160

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def md(value: object) -> str:
    """One table cell: one line, HTML escaped, Markdown's own characters escaped, so that
    nothing in user data becomes a link, an emphasis, a column or a tag."""
    text = " ".join(str(value).split())
    if len(text) > CELL_MAX:
        text = text[: CELL_MAX - 1] + "…"
    text = escape(text, quote=False)
    # GitHub links bare URLs; a zero-width joiner after the colon keeps them text.
    text = re.sub(r"(?i)\b(https?|ftp|file|mailto|www)(:|\.)", "\\1\\2\u2060", text)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text) or " "


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _num(record: Record, name: str, fmt: str = ".4g") -> str:
    return md(cell(record.number(name), fmt))


def render_markdown(report: Report) -> str:
    run = report.run
    counts = report.counts()
    passed = counts.get("pass", 0) + counts.get("noisy", 0)
    failed = len(report.results) - passed
    exit_text = "running" if run.exit_code is None else f"exit {run.exit_code}"
    outcome = "passed" if failed == 0 and not report.regressions else "FAILED"
    lines = [
        f"## fleet run {md(run.run_id)}: {outcome}",
        "",
        f"Suite {md(run.suite)} on {len(report.devices)} device(s), {exit_text}.",
        "",
        f"- **{passed} passed**, **{failed} failed** of {len(report.results)} case(s)"
        + (f" ({counts['noisy']} noisy)" if counts.get("noisy") else ""),
    ]
    others = sorted((o, n) for o, n in counts.items() if o not in ("pass", "noisy"))
    if others:
        named = ", ".join(f"{n} {md(_OUTCOMES.get(o, o))}" for o, n in others)
        lines.append(f"- failed: {named}")
    lines.append(
        f"- {len(report.regressions)} regression(s), {len(report.improvements)} improvement(s)"
    )
    lines.append("")

    if report.flags:
        lines += ["### Regressions and improvements", ""]
        rows = [
            [md(text) for text in flag_cells(flag, report.varying)]
            for flag in report.sorted_flags()
        ]
        lines += _table(FLAG_COLUMNS, rows)

    changes = [(s, s.p50_change_pct()) for s in report.series]
    ranked = sorted(((s, c) for s, c in changes if c is not None), key=lambda pair: -abs(pair[1]))[
        :WORST_CHANGES
    ]
    if ranked:
        lines += ["### Largest p50 changes against the previous valid result", ""]
        rows = [
            [
                md(s.device),
                md(s.label),
                _num(s.previous, "latency_ms_p50") if s.previous else "-",
                _num(s.record, "latency_ms_p50"),
                md(f"{change:+.1f}"),
            ]
            for s, change in ranked
        ]
        lines += _table(["device", "variant", "previous p50 ms", "p50 ms", "change %"], rows)

    if report.failures:
        lines += ["### Failures", ""]
        rows = [
            [
                md(r.tags.get("device", "?")),
                md(variant_label(r.tags, report.varying)),
                md(r.status),
                md(r.fields.get("error_kind", "-")),
                md(r.fields.get("message", "")),
            ]
            for r in report.failures
        ]
        lines += _table(["device", "variant", "status", "error_kind", "message"], rows)
    return "\n".join(lines).rstrip() + "\n"
