"""The report of one run: what the store knows about it, as one self-contained HTML page.

`build_report` gathers the run's results, its device facts, its summary, the regressions
and improvements the regression check stored for it (`regression` records, when there are
any), and the history of each of its series over the suite's earlier runs. `render_html`
turns that into one page that fetches nothing when opened: inline CSS, plots drawn as
inline SVG by `fleet.results.svg`, and one small inline script that only checks that every
plot was laid out (it sets `data-plots-drawn` on the page). A Content-Security-Policy in
the page refuses anything else. Every name, tag and message is user data and is escaped.
`fleet.results.report_markdown` writes the short summary for CI job pages from the same
`Report`.
"""

from __future__ import annotations

import base64
import hashlib
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from fleet import __version__
from fleet.results import svg
from fleet.results.record import FieldValue, Record
from fleet.results.store import RunInfo, Store

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


@dataclass(frozen=True)
class Series:
    """One result of the run, and the same case's results in the runs before it."""

    record: Record
    label: str  # the variant, without the device
    history: list[tuple[int, Record]]  # (index in Report.runs, result), this run's included
    flags: list[Record]  # `regression` records about it, in the runs shown
    previous: Record | None  # its last earlier valid result with a p50

    @property
    def device(self) -> str:
        return self.record.tags.get("device", "?")

    @property
    def name(self) -> str:
        return f"{self.label} on {self.device}"

    def p50_change_pct(self) -> float | None:
        """This run's p50 against the previous valid one, in %."""
        now = self.record.number("latency_ms_p50")
        before = None if self.previous is None else self.previous.number("latency_ms_p50")
        if now is None or not before or not self.valid:
            return None
        return (now / before - 1) * 100

    @property
    def valid(self) -> bool:
        return _valid(self.record)


@dataclass
class Report:
    run: RunInfo
    runs: list[RunInfo]  # the suite's runs up to this one, oldest first (at most TREND_RUNS)
    results: list[Record]  # this run's `result` records, by device and variant
    devices: list[str]
    device_facts: dict[str, Record] = field(default_factory=dict)
    summary: Record | None = None  # the `run` record
    flags: list[Record] = field(default_factory=list)  # this run's `regression` records
    series: list[Series] = field(default_factory=list)
    varying: tuple[str, ...] = ()  # VARIANT_KEYS that differ between the run's cases
    # What `fleet run` kept for `fleet rerun`: the suite file and its sha256, the agent's
    # sha256, each data set's (empty for a run without it: older, or stopped by a signal).
    spec: dict[str, Any] = field(default_factory=dict)

    def results_on(self, device: str) -> list[Series]:
        return [s for s in self.series if s.device == device]

    def counts(self) -> dict[str, int]:
        """pass, fail (a budget broken), noisy, and each status other than ok."""
        counts: dict[str, int] = {}
        for record in self.results:
            outcome = verdict(record)
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    @property
    def failures(self) -> list[Record]:
        return [r for r in self.results if r.status != "ok"]

    @property
    def regressions(self) -> list[Record]:
        return [r for r in self.flags if r.fields.get("direction") == "regression"]

    @property
    def improvements(self) -> list[Record]:
        return [r for r in self.flags if r.fields.get("direction") == "improvement"]


def verdict(record: Record) -> str:
    """pass, fail (a budget broken), noisy (passed, not valid) or the status (timeout, …)."""
    if record.status != "ok":
        return record.status
    if record.fields.get("passed") is False:
        return "fail"
    return "noisy" if record.fields.get("valid") is False else "pass"


def _valid(record: Record) -> bool:
    return record.status == "ok" and record.fields.get("valid") is not False


def _variant_sort(record: Record) -> tuple[str, ...]:
    t = record.tags
    precision = str(_PRECISION_ORDER.get(t.get("precision", ""), 9)) + t.get("precision", "")
    return (
        t.get("model", ""),
        t.get("format", ""),
        precision,
        *(t.get(k, "") for k in VARIANT_KEYS[3:]),
    )


def variant_label(tags: Mapping[str, str], varying: Sequence[str]) -> str:
    """'digits_cnn onnx:int8', with runtime/provider, batch, threads when they vary."""
    label = f"{tags.get('model', '?')} {tags.get('format', '?')}:{tags.get('precision', '?')}"
    if "runtime" in varying or "provider" in varying:
        label += f" {tags.get('runtime', '?')}/{tags.get('provider', '?')}"
    if "batch" in varying:
        label += f" b{tags.get('batch', '?')}"
    if "threads" in varying:
        label += f" t{tags.get('threads', '?')}"
    return label


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
        before = [r for i, r in past if i < current and _valid(r) and r.number("latency_ms_p50")]
        report.series.append(
            Series(
                record=record,
                label=variant_label(record.tags, report.varying),
                history=past,
                flags=sorted(flags.get(key, []), key=lambda r: r.time_ns),
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


# --- HTML ----------------------------------------------------------------------------------

STYLE = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, sans-serif; color: #222; margin: 0; background: #f6f7f9; }
header { background: #1f2d3d; color: #fff; padding: 18px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header .sub { color: #c9d3de; }
nav { padding: 8px 28px; background: #fff; border-bottom: 1px solid #ddd; }
nav a { margin-right: 14px; color: #0b5cad; text-decoration: none; }
main { padding: 8px 28px 40px; }
section { background: #fff; border: 1px solid #e1e4e8; border-radius: 6px; margin: 18px 0;
  padding: 6px 18px 16px; }
h2 { font-size: 18px; margin: 12px 0 8px; }
h3 { font-size: 15px; margin: 14px 0 6px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin-top: 16px; }
.card { background: #fff; border: 1px solid #e1e4e8; border-radius: 6px; padding: 10px 16px;
  min-width: 110px; }
.card b { display: block; font-size: 24px; }
.card.bad b { color: #c0392b; } .card.good b { color: #1e8449; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr));
  gap: 8px 20px; }
.trends { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr));
  gap: 4px 14px; }
figure { margin: 0; overflow-x: auto; }
figcaption { font-weight: 600; margin: 6px 0 2px; font-size: 13px;
  overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 12.5px; }
th, td { border-bottom: 1px solid #e6e6e6; padding: 3px 10px 3px 0; text-align: left;
  vertical-align: top; }
th { color: #555; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th { white-space: nowrap; }
td.msg { max-width: 640px; overflow-wrap: anywhere; }
code, .hash { font-family: ui-monospace, monospace; font-size: 12px; overflow-wrap: anywhere; }
.regression, .fail, .bad { color: #c0392b; } .improvement, .good { color: #1e8449; }
.noisy, .muted { color: #777; }
.legend span { margin-right: 14px; white-space: nowrap; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px;
  border-radius: 50%; vertical-align: -1px; }
svg.plot, svg.noplot { max-width: 100%; height: auto; }
"""

# Runs once the page is parsed: every plot must have points and a real size on screen. It
# writes what it found, and the page's height, on the root element (for tests, and for a
# screenshot of the whole page).
CHECK_SCRIPT = """
(function () {
  var plots = document.querySelectorAll("svg.plot"), drawn = 0;
  plots.forEach(function (plot) {
    var box = plot.getBBox();
    if (plot.querySelectorAll(".pt").length > 0 && box.width > 0 && box.height > 0) {
      drawn += 1;
    }
  });
  document.documentElement.setAttribute("data-plots", String(plots.length));
  document.documentElement.setAttribute("data-plots-drawn", String(drawn));
  document.documentElement.setAttribute("data-height", String(document.body.scrollHeight));
})();
"""


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(CHECK_SCRIPT.encode()).digest()).decode()
    return (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:;"
        f" script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


def e(value: object) -> str:
    """Escaped text of anything (quotes too: the same helper fills attributes)."""
    return escape(str(value), quote=True)


def when(time_ns: int | None) -> str:
    if not time_ns:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time_ns / 1e9))


def cell(value: FieldValue | None, fmt: str = ".4g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if fmt == ".4g":
            return svg.fmt(value)
        return format(value, fmt)
    return str(value)


def _table(
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


def _num(record: Record, name: str, fmt: str = ".4g") -> str:
    return e(cell(record.number(name), fmt))


def _verdict_cell(record: Record) -> str:
    outcome = verdict(record)
    css = "good" if outcome == "pass" else ("noisy" if outcome == "noisy" else "bad")
    text = outcome.upper() if outcome not in ("pass", "noisy") else outcome
    return f'<span class="{css}">{e(text)}</span>'


def render_html(report: Report) -> str:
    """The whole page."""
    run = report.run
    sections = [
        ("latency", "Latency", _latency(report)),
        ("pareto", "Latency against accuracy", _pareto(report)),
        ("memory", "Memory", _memory(report)),
        ("trends", "Trends", _trends(report)),
        ("regressions", "Regressions and improvements", _flags(report)),
        ("failures", "Failures", _failures(report)),
        ("provenance", "Provenance", _provenance(report)),
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
        f'<meta http-equiv="Content-Security-Policy" content="{e(_csp())}">'
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


def _latency(report: Report) -> str:
    legend = (
        '<p class="legend"><span><i style="background:#0072b2"></i>p50 with its 95% confidence'
        ' interval</span><span>△ p95</span><span>◇ p99</span><span class="bad">status in place'
        " of a case that did not run to the end</span></p>"
    )
    figures = []
    for device in report.devices:
        series = report.results_on(device)
        rows = [
            svg.IntervalRow(
                label=s.label,
                p50=s.record.number("latency_ms_p50"),
                low=s.record.number("latency_p50_ci95_low_ms"),
                high=s.record.number("latency_p50_ci95_high_ms"),
                p95=s.record.number("latency_ms_p95"),
                p99=s.record.number("latency_ms_p99"),
                status=s.record.status,
            )
            for s in series
        ]
        plot = svg.interval_plot(rows, f"latency on {device}")
        table = _table(
            ["variant", "p50 ms", "95% CI", "p95 ms", "p99 ms", "iterations", "result"],
            (
                [
                    e(s.label),
                    _num(s.record, "latency_ms_p50"),
                    _ci(s.record),
                    _num(s.record, "latency_ms_p95"),
                    _num(s.record, "latency_ms_p99"),
                    _num(s.record, "iterations", ".0f"),
                    _verdict_cell(s.record),
                ]
                for s in series
            ),
            numeric=(1, 2, 3, 4, 5),
        )
        figures.append(f"<figure><figcaption>{e(device)}</figcaption>{plot}{table}</figure>")
    return f'{legend}<div class="grid">{"".join(figures)}</div>'


def _ci(record: Record) -> str:
    low = record.number("latency_p50_ci95_low_ms")
    high = record.number("latency_p50_ci95_high_ms")
    if low is None or high is None:
        return "-"
    return e(f"{cell(low)}–{cell(high)}")


def _pareto(report: Report) -> str:
    figures = []
    measured = {
        device: [
            s
            for s in report.results_on(device)
            if s.record.status == "ok"
            and s.record.number("latency_ms_p50") is not None
            and s.record.number("accuracy_top1") is not None
        ]
        for device in report.devices
    }
    models = sorted({s.record.tags.get("model", "?") for m in measured.values() for s in m})
    legend = "".join(
        f'<span><i style="background:{svg.PALETTE[i % len(svg.PALETTE)]}"></i>{e(m)}</span>'
        for i, m in enumerate(models)
    )
    short = [k for k in report.varying if k not in ("runtime", "provider")]
    for device in report.devices:
        on_device = measured[device]
        pairs = [
            (s.record.number("latency_ms_p50") or 0.0, s.record.number("accuracy_top1") or 0.0)
            for s in on_device
        ]
        front: set[int] = set()
        for model in models:
            mine = [i for i, s in enumerate(on_device) if s.record.tags.get("model") == model]
            front |= {mine[i] for i in svg.pareto_front([pairs[i] for i in mine])}
        points = [
            svg.ScatterPoint(
                label=s.label,
                x=pairs[i][0],
                y=pairs[i][1],
                group=models.index(s.record.tags.get("model", "?")),
                on_front=i in front,
                tag=variant_label(s.record.tags, short).partition(" ")[2],
            )
            for i, s in enumerate(on_device)
        ]
        plot = svg.scatter_plot(
            points, f"latency against accuracy on {device}", "p50 latency (ms)", "top-1"
        )
        on_front = "; ".join(p.label for p in points if p.on_front) or "none"
        figures.append(
            f"<figure><figcaption>{e(device)}</figcaption>{plot}"
            f'<p class="muted">on a front: {e(on_front)}</p></figure>'
        )
    return (
        "<p>Top-1 accuracy against p50 latency of every variant measured on the device, a"
        " colour per model. The ringed points, joined by a dashed line in their model's colour,"
        " are the Pareto front of that model's variants: no other variant of it is both as"
        " fast and as accurate there. (Models are not compared with each other: their"
        " accuracies may come from different data sets.)</p>"
        f'<p class="legend">{legend}</p><div class="grid">{"".join(figures)}</div>'
    )


_MEMORY = ("peak_rss_mb", "peak_delta_mb", "model_size_mb")


def _memory(report: Report) -> str:
    legend = "".join(
        f'<span><i style="background:{svg.PALETTE[i]}"></i>{e(name)}</span>'
        for i, name in enumerate(_MEMORY)
    )
    figures = []
    for device in report.devices:
        series = report.results_on(device)
        rows = [
            svg.BarRow(s.label, tuple(s.record.number(name) for name in _MEMORY), s.record.status)
            for s in series
        ]
        plot = svg.bar_plot(rows, _MEMORY, f"memory on {device}")
        table = _table(
            ["variant", "peak RSS MiB", "peak delta MiB", "model MiB", "baseline MiB"],
            (
                [
                    e(s.label),
                    *(_num(s.record, name) for name in _MEMORY),
                    _num(s.record, "rss_baseline_mb"),
                ]
                for s in series
            ),
            numeric=(1, 2, 3, 4),
        )
        figures.append(f"<figure><figcaption>{e(device)}</figcaption>{plot}{table}</figure>")
    return (
        "<p>peak_rss_mb: the process's peak during the timed part; peak_delta_mb: that peak"
        " less the baseline after the runtime's import (the model's own cost); model_size_mb:"
        " the artifact on disk; baseline: RSS after the runtime's import (all MiB).</p>"
        f'<p class="legend">{legend}</p><div class="grid">{"".join(figures)}</div>'
    )


def _trends(report: Report) -> str:
    labels = run_labels(report.runs)
    current = len(report.runs) - 1
    run_ids = [r.run_id for r in report.runs]
    parts = []
    for device in report.devices:
        figures = []
        for s in report.results_on(device):
            points = []
            marks = []
            for at, record in s.history:
                value = record.number("latency_ms_p50")
                if record.status != "ok":
                    tip = f"{record.run_id}: {record.status}"
                    marks.append(svg.TrendMark(at, "failed", tip))
                elif value is not None:
                    noisy = "" if _valid(record) else " (noisy: not valid)"
                    tip = f"{record.run_id}: p50 {svg.fmt(value)} ms{noisy}"
                    points.append(svg.TrendPoint(at, value, _valid(record), tip))
            for flag in s.flags:
                at = run_ids.index(flag.run_id)
                direction = str(flag.fields.get("direction", "regression"))
                tip = str(flag.fields.get("message", "")) or f"{direction}: {flag.tags}"
                marks.append(svg.TrendMark(at, direction, tip))
                since = str(flag.fields.get("since_run", ""))
                if since in run_ids:
                    metric = flag.tags.get("metric", "?")
                    text = f"{metric} {direction} began at run {since}"
                    marks.append(svg.TrendMark(run_ids.index(since), "change", text))
            plot = svg.trend_plot(points, marks, labels, current, f"p50 of {s.name}")
            flagged = "".join(
                f' <span class="{e(f.fields.get("direction", ""))}">'
                f"{e(f.fields.get('direction', ''))} ({e(f.tags.get('metric', '?'))})</span>"
                for f in s.flags
                if f.run_id == report.run.run_id
            )
            figures.append(f"<figure><figcaption>{e(s.label)}{flagged}</figcaption>{plot}</figure>")
        parts.append(f'<h3>{e(device)}</h3><div class="trends">{"".join(figures)}</div>')
    first = report.runs[0].run_id
    return (
        f"<p>p50 of each series of this run in the last {len(report.runs)} run(s) of suite"
        f" {e(report.run.suite)} in the store (from {e(first)}); the shaded column is this run."
        ' An open dot is a noisy result, a <span class="bad">red ring</span> a regression and a'
        ' <span class="good">green ring</span> an improvement flagged at that run (any metric),'
        ' a <span class="bad">dashed line</span> where that shift began (its since_run), a'
        ' <span class="bad">cross</span> a run where the case failed.</p>' + "".join(parts)
    )


def run_labels(runs: Sequence[RunInfo]) -> list[str]:
    """Short names of runs along an axis: the day of the run id's time (fleet's run ids begin
    with it, UTC), else of its start; day and time when one day has several runs; the end
    of the run ids when one minute has several."""

    def moment(run: RunInfo) -> time.struct_time:
        try:
            return time.strptime(run.run_id[:16], "%Y%m%dT%H%M%SZ")
        except ValueError:
            return time.gmtime(run.started_ns / 1e9)

    for pattern in ("%m-%d", "%d %H:%M"):
        labels = [time.strftime(pattern, moment(r)) for r in runs]
        if len(set(labels)) == len(labels):
            return labels
    return [r.run_id[-6:] for r in runs]  # several a minute: the run ids' own endings


def _flags(report: Report) -> str:
    if not report.flags:
        note = (
            "No regression or improvement stored for this run (the regression check stores"
            " one `regression` record for each; a run not checked has none)."
        )
        return f'<p class="muted">{e(note)}</p>'
    rows = []
    for flag in sorted(
        report.flags,
        key=lambda r: (r.fields.get("direction") != "regression", r.tags.get("device", "")),
    ):
        direction = str(flag.fields.get("direction", ""))
        rows.append(
            [
                f'<span class="{e(direction)}">{e(direction)}</span>',
                e(flag.tags.get("device", "?")),
                e(variant_label(flag.tags, report.varying)),
                e(flag.tags.get("metric", "?")),
                f"{_num(flag, 'baseline')} ± {_num(flag, 'spread', '.2g')}",
                _num(flag, "value"),
                _num(flag, "change_pct", "+.1f"),
                e(flag.fields.get("since_run", "-")),
                f'<span class="msg">{e(flag.fields.get("message", ""))}</span>',
            ]
        )
    return _table(
        ["", "device", "variant", "metric", "baseline ± spread", "value", "change %", "since run",
         "message"],
        rows,
        numeric=(4, 5, 6),
    )  # fmt: skip


def _failures(report: Report) -> str:
    rows = [
        [
            e(r.tags.get("device", "?")),
            e(variant_label(r.tags, report.varying)),
            f'<span class="bad">{e(r.status)}</span>',
            e(r.fields.get("error_kind", "-")),
            e(r.fields.get("message", "")),
        ]
        for r in report.failures
    ]
    budgets = [
        [
            e(r.tags.get("device", "?")),
            e(variant_label(r.tags, report.varying)),
            e(r.fields.get("budget_failures", "") or "a budget was not met"),
        ]
        for r in report.results
        if verdict(r) == "fail"
    ]
    text = (
        "<p>Cases whose status is not ok: the device's verdict (timeout, out_of_memory, refused)"
        " or a failure of the run (error_kind says what went wrong with the device).</p>"
    )
    if not rows:
        text += '<p class="good">every case ran to the end</p>'
    else:
        table = _table(["device", "variant", "status", "error_kind", "message"], rows)
        text += table.replace("<td>", '<td class="msg">')
    if budgets:
        text += "<h3>Budgets not met</h3>" + _table(["device", "variant", "budgets"], budgets)
    return text


_AGENT_COLUMNS = ("device", "agent_version", "runtime", "runtime version", "python", "numpy")


def _fleet_version(of_run: FieldValue | None) -> str:
    this = e(f"{__version__} (this report)")
    if of_run is None:
        return f'{this}; <span class="muted">the run\'s own is not stored with it</span>'
    return f"{e(of_run)} (the run); {this}"


def _provenance(report: Report) -> str:
    run = report.run
    summary = report.summary
    fields = dict(summary.fields) if summary is not None else {}
    spec = report.spec
    suite_hash = spec.get("suite_sha256") or next(
        (str(v) for k, v in sorted(fields.items()) if k.startswith("suite_") and "sha" in k), None
    )
    fleet_version = fields.get("fleet_version")
    overview = [
        ["run", f"<code>{e(run.run_id)}</code>"],
        [
            "suite",
            e(run.suite) + (f" (<code>{e(spec['suite'])}</code>)" if "suite" in spec else ""),
        ],
        [
            "suite file sha256",
            f'<span class="hash">{e(suite_hash)}</span>'
            if suite_hash
            else '<span class="muted">not stored with this run</span>',
        ],
        ["fleet version", _fleet_version(fleet_version)],
        [
            "agent zipapp sha256",
            f'<span class="hash">{e(spec["agent_sha256"])}</span>'
            if spec.get("agent_sha256")
            else '<span class="muted">not stored with this run</span>',
        ],
        ["started", e(when(run.started_ns))],
        ["finished", e(when(run.finished_ns))],
        ["exit code", e("running" if run.exit_code is None else run.exit_code)],
    ]
    for name in ("inventory", "devices", "parallel", "rerun_of"):
        if spec.get(name) is not None:
            overview.append([e(f"run spec: {name}"), f"<code>{e(spec[name])}</code>"])
    data = spec.get("data")
    if isinstance(data, dict):
        for path, sha in sorted(data.items()):
            overview.append([e(f"data file sha256: {path}"), f'<span class="hash">{e(sha)}</span>'])
    for name in sorted(fields):
        if name not in ("run_id", "exit_code") and name != "fleet_version":
            overview.append([e(f"run record: {name}"), e(cell(fields[name]))])

    per_device = []
    for device in report.devices:
        records = [s.record for s in report.results_on(device)]

        def distinct(name: str, records: list[Record] = records) -> str:
            values = sorted({str(r.fields[name]) for r in records if name in r.fields})
            return e(", ".join(values)) if values else '<span class="muted">-</span>'

        per_device.append(
            [
                e(device),
                f'<span class="hash">{distinct("agent_version")}</span>',
                distinct("runtime_package"),
                distinct("runtime_version"),
                distinct("python_version"),
                distinct("numpy_version"),
            ]
        )
    artifacts: dict[tuple[str, str], set[str]] = {}
    sizes: dict[tuple[str, str], float] = {}
    for record in report.results:
        key = (
            record.tags.get("model", "?"),
            f"{record.tags.get('format', '?')}:{record.tags.get('precision', '?')}",
        )
        sha = record.fields.get("model_sha256")
        artifacts.setdefault(key, set())
        if sha:
            artifacts[key].add(str(sha))
        size = record.number("model_size_mb")
        if size is not None:
            sizes[key] = size
    artifact_rows = [
        [
            e(model),
            e(variant),
            "<br>".join(f'<span class="hash">{e(s)}</span>' for s in sorted(shas))
            or '<span class="muted">not stored</span>',
            e(cell(sizes.get((model, variant)), ".2f")),
        ]
        for (model, variant), shas in sorted(artifacts.items())
    ]
    facts_names = sorted(
        {
            name
            for record in report.device_facts.values()
            for name in (*record.tags, *record.fields)
            if name not in ("run_id", "suite", "device")
        }
    )
    fact_devices = [d for d in report.devices if d in report.device_facts]
    fact_devices += sorted(set(report.device_facts) - set(fact_devices))
    fact_rows = []
    for name in facts_names:
        row = [e(name)]
        for device in fact_devices:
            record = report.device_facts[device]
            value = record.tags.get(name, record.fields.get(name))
            row.append(e(cell(value)))
        fact_rows.append(row)
    facts = (
        _table(["fact", *fact_devices], fact_rows)
        if fact_devices
        else '<p class="muted">no device records stored for this run</p>'
    )
    return (
        _table(["", ""], overview)
        + "<h3>Agent and runtimes, per device</h3>"
        + _table(_AGENT_COLUMNS, per_device)
        + "<h3>Artifacts</h3>"
        + _table(["model", "variant", "model_sha256", "model_size_mb"], artifact_rows, (3,))
        + "<h3>Device facts (what each agent's sysinfo saw)</h3>"
        + facts
    )
