"""The report of one run: what the store knows about it, as one self-contained HTML page.

`build_report` gathers the run's results, its device facts, its summary, the regressions
and improvements the regression check stored for it (`regression` records, when there are
any), and the history of each of its series over the suite's earlier runs, into a `Report`
(`fleet.results.report_model`). `render_html` turns that into one page that fetches nothing
when opened: inline CSS, plots drawn as inline SVG by `fleet.results.svg`, and one small
inline script that only checks that every plot was laid out (it sets `data-plots-drawn` on
the page; both in `fleet.results.report_assets`). A Content-Security-Policy in the page
refuses anything else. Every name, tag and message is user data and is escaped. The page's
sections are written by `fleet.results.report_plots` and `fleet.results.report_tables`.
`fleet.results.report_markdown` writes the short summary for CI job pages from the same
`Report`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from fleet import __version__
from fleet.results.record import Record, settled
from fleet.results.report_assets import CHECK_SCRIPT, STYLE, csp
from fleet.results.report_cells import e, when
from fleet.results.report_model import Report, Series, is_valid, variant_label
from fleet.results.report_plots import (
    latency_section,
    memory_section,
    pareto_section,
    trends_section,
)
from fleet.results.report_tables import failures_section, flags_section, provenance_section
from fleet.results.store import Store

# What makes a case, apart from the device; tags beyond these describe the device.
VARIANT_KEYS = ("model", "format", "precision", "runtime", "provider", "batch", "threads")
# Tags that describe the device rather than the case: not part of a series' identity.
DEVICE_TAGS = ("device_class", "arch", "os")
# Runs of the suite a trend shows, the report's run last.
TREND_RUNS = 30
_PRECISION_ORDER = {"fp32": 0, "fp16": 1, "bf16": 2, "int8": 3}

SeriesKey = tuple[tuple[str, str], ...]


def series_key(tags: Mapping[str, str]) -> SeriesKey:
    """One case on one device: every tag but the device's own description, and `metric`
    (which a `regression` record adds to the tags of the series it is about)."""
    skip = (*DEVICE_TAGS, "metric")
    return tuple(sorted((k, v) for k, v in tags.items() if k not in skip))


def _variant_sort(record: Record) -> tuple[str, ...]:
    t = record.tags
    precision = str(_PRECISION_ORDER.get(t.get("precision", ""), 9)) + t.get("precision", "")
    return (
        t.get("model", ""),
        t.get("format", ""),
        precision,
        *(t.get(k, "") for k in VARIANT_KEYS[3:]),
    )


def build_report(store: Store, run_id: str | None) -> Report:
    """Everything the report shows about the run (its id, a unique prefix, or None: the
    latest), read from the store."""
    run = store.find_run(run_id)
    earlier = [
        r
        for r in store.runs()
        if r.suite == run.suite and r.started_ns <= run.started_ns and r.run_id != run.run_id
    ]
    runs = [*earlier[len(earlier) - TREND_RUNS + 1 :], run]
    index = {r.run_id: i for i, r in enumerate(runs)}
    records = store.records(run.run_id)
    results = [r for r in records if r.measurement == "result"]
    devices = [d for d in run.devices if any(r.tags.get("device") == d for r in records)]
    devices += sorted({r.tags.get("device", "?") for r in results} - set(devices))
    results.sort(key=lambda r: (devices.index(r.tags.get("device", "?")), _variant_sort(r)))
    report = Report(run=run, runs=runs, results=results, devices=devices)
    report.spec = _run_spec(store, run.run_id)
    for record in records:
        if record.measurement == "device":
            report.device_facts[record.tags.get("device", "?")] = record
        elif record.measurement == "run":
            report.summary = record
        elif record.measurement == "regression":
            report.flags.append(record)
    report.flags = settled(report.flags)
    report.varying = tuple(k for k in VARIANT_KEYS if len({r.tags.get(k, "") for r in results}) > 1)

    # Each run's records by its id (indexed), not the whole store.
    history: dict[SeriesKey, list[tuple[int, Record]]] = {}
    flags: dict[SeriesKey, list[Record]] = {}
    for at, shown in enumerate(runs):
        for record in records if shown is run else store.records(shown.run_id):
            if record.measurement == "result" and record.tags.get("suite") == run.suite:
                history.setdefault(series_key(record.tags), []).append((at, record))
            elif record.measurement == "regression":
                flags.setdefault(series_key(record.tags), []).append(record)
    current = index[run.run_id]
    for record in results:
        key = series_key(record.tags)
        past = sorted(history.get(key, []), key=lambda pair: (pair[0], pair[1].time_ns))
        before = [r for i, r in past if i < current and is_valid(r) and r.number("latency_ms_p50")]
        report.series.append(
            Series(
                record=record,
                label=variant_label(record.tags, report.varying),
                history=past,
                flags=sorted(settled(flags.get(key, [])), key=lambda r: r.time_ns),
                previous=before[-1] if before else None,
            )
        )
    return report


def _run_spec(store: Store, run_id: str) -> dict[str, Any]:
    """The run's spec where the store keeps one (`Store.run_spec`, written by `fleet run`
    for `fleet rerun`), else nothing: the report shows what the store has."""
    read = getattr(store, "run_spec", None)
    spec = read(run_id) if callable(read) else None
    return dict(spec) if isinstance(spec, dict) else {}


def render_html(report: Report) -> str:
    """The whole page."""
    run = report.run
    sections = [
        ("latency", "Latency", latency_section(report)),
        ("pareto", "Latency against accuracy", pareto_section(report)),
        ("memory", "Memory", memory_section(report)),
        ("trends", "Trends", trends_section(report)),
        ("regressions", "Regressions and improvements", flags_section(report)),
        ("failures", "Failures", failures_section(report)),
        ("provenance", "Provenance", provenance_section(report)),
    ]
    nav = "".join(f'<a href="#{key}">{e(title)}</a>' for key, title, _ in sections)
    body = "".join(
        f'<section id="{key}"><h2>{e(title)}</h2>{content}</section>'
        for key, title, content in sections
    )
    title = f"fleet report: {run.run_id} ({run.suite})"
    exit_text = "running" if run.exit_code is None else str(run.exit_code)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{e(csp())}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="fleet {e(__version__)}">'
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>Run {e(run.run_id)}</h1>"
        f'<div class="sub">suite {e(run.suite)} · devices {e(", ".join(run.devices))} ·'
        f" started {e(when(run.started_ns))} · finished {e(when(run.finished_ns))} ·"
        f" exit code {e(exit_text)}</div></header>"
        f"<nav>{nav}</nav><main>{_cards(report)}{body}</main>"
        f'<footer class="muted" style="padding: 0 28px 20px">written by fleet {e(__version__)}'
        f" on {e(when(time.time_ns()))}; nothing in this file is fetched from elsewhere</footer>"
        f"<script>{CHECK_SCRIPT}</script></body></html>\n"
    )


def _cards(report: Report) -> str:
    counts = report.counts()
    failed = sum(n for outcome, n in counts.items() if outcome not in ("pass", "noisy"))
    cards = [
        ("cases", len(report.results), ""),
        ("passed", counts.get("pass", 0) + counts.get("noisy", 0), "good"),
        ("failed", failed, "bad" if failed else ""),
        ("noisy", counts.get("noisy", 0), ""),
        ("regressions", len(report.regressions), "bad" if report.regressions else ""),
        ("improvements", len(report.improvements), "good" if report.improvements else ""),
        ("devices", len(report.devices), ""),
    ]
    return (
        '<div class="cards">'
        + "".join(f'<div class="card {css}"><b>{n}</b>{e(name)}</div>' for name, n, css in cards)
        + "</div>"
    )
