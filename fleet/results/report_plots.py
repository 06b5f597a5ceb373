"""The sections of the HTML report that are plots: latency, latency against accuracy,
memory and each series' trend over the suite's runs, a figure per device (the plots drawn by
`fleet.results.svg`), with the numbers behind them in tables.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from fleet.results import svg
from fleet.results.record import Record
from fleet.results.report_cells import e, num, table, verdict_cell
from fleet.results.report_model import Report, cell, is_valid, variant_label
from fleet.results.store import RunInfo
from fleet.results.svg_primitives import PALETTE, fmt


def latency_section(report: Report) -> str:
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
        numbers = table(
            ["variant", "p50 ms", "95% CI", "p95 ms", "p99 ms", "iterations", "result"],
            (
                [
                    e(s.label),
                    num(s.record, "latency_ms_p50"),
                    _ci(s.record),
                    num(s.record, "latency_ms_p95"),
                    num(s.record, "latency_ms_p99"),
                    num(s.record, "iterations", ".0f"),
                    verdict_cell(s.record),
                ]
                for s in series
            ),
            numeric=(1, 2, 3, 4, 5),
        )
        figures.append(f"<figure><figcaption>{e(device)}</figcaption>{plot}{numbers}</figure>")
    return f'{legend}<div class="grid">{"".join(figures)}</div>'


def _ci(record: Record) -> str:
    low = record.number("latency_p50_ci95_low_ms")
    high = record.number("latency_p50_ci95_high_ms")
    if low is None or high is None:
        return "-"
    return e(f"{cell(low)}–{cell(high)}")


def pareto_section(report: Report) -> str:
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
        f'<span><i style="background:{PALETTE[i % len(PALETTE)]}"></i>{e(m)}</span>'
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


def memory_section(report: Report) -> str:
    legend = "".join(
        f'<span><i style="background:{PALETTE[i]}"></i>{e(name)}</span>'
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
        numbers = table(
            ["variant", "peak RSS MiB", "peak delta MiB", "model MiB", "baseline MiB"],
            (
                [
                    e(s.label),
                    *(num(s.record, name) for name in _MEMORY),
                    num(s.record, "rss_baseline_mb"),
                ]
                for s in series
            ),
            numeric=(1, 2, 3, 4),
        )
        figures.append(f"<figure><figcaption>{e(device)}</figcaption>{plot}{numbers}</figure>")
    return (
        "<p>peak_rss_mb: the process's peak during the timed part; peak_delta_mb: that peak"
        " less the baseline after the runtime's import (the model's own cost); model_size_mb:"
        " the artifact on disk; baseline: RSS after the runtime's import (all MiB).</p>"
        f'<p class="legend">{legend}</p><div class="grid">{"".join(figures)}</div>'
    )


def trends_section(report: Report) -> str:
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
                    noisy = "" if is_valid(record) else " (noisy: not valid)"
                    tip = f"{record.run_id}: p50 {fmt(value)} ms{noisy}"
                    points.append(svg.TrendPoint(at, value, is_valid(record), tip))
            for flag in s.flags:
                at = run_ids.index(flag.run_id)
                direction = str(flag.fields.get("direction", "regression"))
                if direction == "cleared":  # a rerun did not show it: no change to mark
                    continue
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
