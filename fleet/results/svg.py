"""Small SVG plots for the HTML report, drawn here so that the report fetches nothing.

Each plot is one `<svg class="plot">` string (`noplot` when it has no data to show): inline in
the page, every text escaped, each data point an element of class `pt` with a `<title>` (the
browser's own tooltip, no script). `data-points` says how many points were drawn; the
report's check script counts them. What every plot is drawn with (colours, scales, axes,
text) is in `fleet.results.svg_primitives`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from fleet.results.svg_primitives import (
    BAD,
    CHAR_W,
    GOOD,
    MUTED,
    PALETTE,
    Scale,
    fmt,
    label_width,
    nice_ticks,
    num,
    open_plot,
    padded,
    text_at,
    x_axis,
    y_axis,
)

# A latency axis turns logarithmic when its largest value is this many times its smallest:
# a p99 far out in the tail would otherwise squeeze every p50 against zero.
LOG_RATIO = 30.0


def log_ticks(low: float, high: float) -> list[float]:
    """1, 2 and 5 times the powers of ten within [low, high] (only powers of ten when that
    makes more than eight)."""
    ticks = []
    for power in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        ticks += [m * 10.0**power for m in (1, 2, 5)]
    inside = [t for t in ticks if low <= t * (1 + 1e-9) and t <= high * (1 + 1e-9)]
    if len(inside) > 8:
        inside = [t for t in inside if math.isclose(10 ** round(math.log10(t)), t)]
    return inside


# --- latency: p50 with its 95 % interval, p95, p99, one row per variant ---------------------

# How p95 and p99 are marked: name, the mark's path from its top, colour.
_TAIL_MARKS = (("p95", "l5 9h-10z", PALETTE[1]), ("p99", "l5 5l-5 5l-5 -5z", PALETTE[5]))


@dataclass(frozen=True)
class IntervalRow:
    label: str
    p50: float | None
    low: float | None = None  # the p50's 95 % confidence interval
    high: float | None = None
    p95: float | None = None
    p99: float | None = None
    status: str = "ok"  # shown in place of the marks when there is no p50


def interval_plot(rows: Sequence[IntervalRow], title: str, width: int = 560) -> str:
    """Dots for p50 with whiskers for its confidence interval; p95 and p99 as open marks."""
    row_h, top, bottom = 22, 8, 36
    left = label_width([r.label for r in rows])
    right = width - 16
    height = top + row_h * max(len(rows), 1) + bottom
    values = [
        v for r in rows for v in (r.p50, r.low, r.high, r.p95, r.p99) if v is not None and v >= 0
    ]
    drawn = sum(r.p50 is not None for r in rows)
    parts = [open_plot("latency", width, height, drawn, title)]
    if not values:  # every case failed: their statuses, and no axis
        for i, row in enumerate(rows):
            y = top + row_h * i + row_h / 2
            parts.append(text_at(left - 8, y + 4, row.label, "end"))
            parts.append(text_at(left + 6, y + 4, row.status, extra=f' fill="{BAD}"'))
        parts.append(text_at(width / 2, height - 12, "no latency measured", "middle"))
        return "".join([*parts, "</svg>"])
    positive = [v for v in values if v > 0]
    axis_y = top + row_h * len(rows) + 4
    if positive and max(positive) > LOG_RATIO * min(positive):
        low, high = min(positive) / 1.3, max(positive) * 1.3
        x = Scale(low, high, left, right, log=True)
        parts += x_axis(x, axis_y, top, log_ticks(low, high), "latency (ms, log scale)")
    else:
        low, high = padded(values, from_zero=True)
        x = Scale(low, high, left, right)
        parts += x_axis(x, axis_y, top, nice_ticks(low, high), "latency (ms)")
    for i, row in enumerate(rows):
        y = top + row_h * i + row_h / 2
        parts.append(text_at(left - 8, y + 4, row.label, "end"))
        if row.p50 is None:
            parts.append(text_at(left + 6, y + 4, row.status, extra=f' fill="{BAD}"'))
            continue
        tip = f"{row.label}: p50 {fmt(row.p50)} ms"
        if row.low is not None and row.high is not None:
            tip += f" (95% CI {fmt(row.low)}–{fmt(row.high)})"
            parts.append(
                f'<line class="ci" x1="{num(x(row.low))}" x2="{num(x(row.high))}" y1="{num(y)}"'
                f' y2="{num(y)}" stroke="{PALETTE[0]}" stroke-width="2"/>'
            )
            for end in (row.low, row.high):
                parts.append(
                    f'<line x1="{num(x(end))}" x2="{num(x(end))}" y1="{num(y - 5)}"'
                    f' y2="{num(y + 5)}" stroke="{PALETTE[0]}" stroke-width="1.5"/>'
                )
        for (name, shape, colour), value in zip(_TAIL_MARKS, (row.p95, row.p99), strict=True):
            if value is None:
                continue
            tip += f", {name} {fmt(value)}"
            parts.append(
                f'<path d="M{num(x(value))} {num(y - 5)}{shape}" fill="none"'
                f' stroke="{colour}" stroke-width="1.5"><title>{escape(row.label)}: {name}'
                f" {escape(fmt(value))} ms</title></path>"
            )
        parts.append(
            f'<circle class="pt" cx="{num(x(row.p50))}" cy="{num(y)}" r="4.5"'
            f' fill="{PALETTE[0]}"><title>{escape(tip + " ms")}</title></circle>'
        )
    return "".join([*parts, "</svg>"])


# --- latency against accuracy, the Pareto front highlighted ---------------------------------


Box = tuple[float, float, float, float]  # left, top, right, bottom


@dataclass(frozen=True)
class ScatterPoint:
    label: str  # in the tooltip
    x: float
    y: float
    group: int  # colour; each group has its own front
    on_front: bool = False
    tag: str = ""  # written beside a point of the front


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: as fast or faster and as accurate or more,
    better in one (lower x, higher y). Sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best = -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def scatter_plot(
    points: Sequence[ScatterPoint], title: str, x_title: str, y_title: str, width: int = 560
) -> str:
    """Latency across, accuracy up; each group's front joined by a dashed step line in its
    colour, the points on a front ringed and tagged."""
    height, left, right, top, bottom = 300, 58, width - 16, 12, 40
    parts = [open_plot("pareto", width, height, len(points), title)]
    if not points:
        parts.append(text_at(width / 2, height / 2, "no accuracy measured", "middle"))
        return "".join([*parts, "</svg>"])
    x_low, x_high = padded([p.x for p in points], from_zero=True)
    y_low, y_high = padded([p.y for p in points])
    if max(p.y for p in points) <= 1.0:
        y_low, y_high = max(y_low, 0.0), min(y_high, 1.0)  # a fraction: 0 to 100 %
        if y_high - y_low < 0.02:
            y_low = max(0.0, y_high - 0.02)
    x = Scale(x_low, x_high, left, right)
    y = Scale(y_low, y_high, height - bottom, top)
    parts += x_axis(x, height - bottom, top, nice_ticks(x_low, x_high), x_title)
    parts += y_axis(y, left, right, nice_ticks(y_low, y_high), y_title, percent=True)
    for group in sorted({p.group for p in points}):
        front = sorted((p for p in points if p.on_front and p.group == group), key=lambda p: p.x)
        if len(front) > 1:
            path = f"M{num(x(front[0].x))} {num(y(front[0].y))}"
            for point in front[1:]:
                path += f"H{num(x(point.x))}V{num(y(point.y))}"
            parts.append(
                f'<path class="front" d="{path}" fill="none" stroke-width="1.8"'
                f' stroke="{PALETTE[group % len(PALETTE)]}" stroke-dasharray="5 3"/>'
            )
    taken: list[Box] = []  # where the tags written are
    for p in sorted(points, key=lambda p: (not p.on_front, p.x)):
        colour = PALETTE[p.group % len(PALETTE)]
        px, py = x(p.x), y(p.y)
        tip = f"{p.label}: {fmt(p.x)} ms, {fmt(p.y * 100)}%"
        if p.on_front:
            tip += " (on its model's Pareto front)"
            parts.append(
                f'<circle cx="{num(px)}" cy="{num(py)}" r="8.5" fill="none" stroke="{colour}"'
                ' stroke-width="1.8"/>'
            )
            if p.tag:
                parts += _tag(p.tag, px, py, right, taken)
        parts.append(
            f'<circle class="pt" cx="{num(px)}" cy="{num(py)}" r="4.5" fill="{colour}"'
            f' fill-opacity="0.85"><title>{escape(tip)}</title></circle>'
        )
    return "".join([*parts, "</svg>"])


def _tag(text: str, px: float, py: float, right: float, taken: list[Box]) -> list[str]:
    """The text beside a point, above it or below, where it covers no tag already written;
    nothing when there is no such place (the tooltip still names the point)."""
    width, height = len(text) * CHAR_W * 10 / 11, 11.0
    left = px + 11 if px + 11 + width <= right else px - 11 - width
    for top in (py - 19, py + 8):
        box = (left, top, left + width, top + height)
        if all(box[2] < b[0] or b[2] < box[0] or box[3] < b[1] or b[3] < box[1] for b in taken):
            taken.append(box)
            return [text_at(left, top + 9, text, extra=' font-size="10"')]
    return []


# --- memory: grouped horizontal bars --------------------------------------------------------


@dataclass(frozen=True)
class BarRow:
    label: str
    values: tuple[float | None, ...]  # one per bar name, in order
    status: str = "ok"  # shown in place of the bars when there are none


def bar_plot(rows: Sequence[BarRow], names: Sequence[str], title: str, width: int = 560) -> str:
    """For each row one thin bar per name (colours in that order), labelled with its value."""
    bar_h, gap, top, bottom = 7, 8, 8, 36
    group_h = bar_h * len(names) + gap
    left = label_width([r.label for r in rows])
    right = width - 50
    height = top + group_h * max(len(rows), 1) + bottom
    values = [v for r in rows for v in r.values if v is not None]
    parts = [open_plot("memory", width, height, len(values), title)]
    if not values:
        parts.append(text_at(width / 2, height / 2, "no memory measured", "middle"))
        return "".join([*parts, "</svg>"])
    low, high = padded(values, from_zero=True)
    x = Scale(low, high, left, right)
    axis_y = top + group_h * len(rows)
    parts += x_axis(x, axis_y, top, nice_ticks(low, high), "MiB")
    for i, row in enumerate(rows):
        y0 = top + group_h * i
        parts.append(text_at(left - 8, y0 + group_h / 2 + 2, row.label, "end"))
        if all(value is None for value in row.values):
            parts.append(
                text_at(left + 6, y0 + group_h / 2 + 2, row.status, extra=f' fill="{BAD}"')
            )
        for j, (name, value) in enumerate(zip(names, row.values, strict=True)):
            if value is None:
                continue
            y = y0 + j * bar_h
            w = max(x(value) - x(0.0), 1.0)
            parts.append(
                f'<rect class="pt" x="{num(x(0.0))}" y="{num(y)}" width="{num(w)}"'
                f' height="{bar_h - 1}" fill="{PALETTE[j % len(PALETTE)]}">'
                f"<title>{escape(f'{row.label}: {name} {fmt(value)} MiB')}</title></rect>"
            )
            parts.append(text_at(x(0.0) + w + 3, y + bar_h - 1, fmt(value), extra=' font-size="8"'))
    return "".join([*parts, "</svg>"])


# --- trend of one series over runs ----------------------------------------------------------


@dataclass(frozen=True)
class TrendPoint:
    index: int  # which run, along the x axis
    value: float
    valid: bool
    tip: str


@dataclass(frozen=True)
class TrendMark:
    index: int
    kind: str  # regression, improvement (a flag at a run), change (where a shift began), failed
    tip: str


def trend_plot(
    points: Sequence[TrendPoint],
    marks: Sequence[TrendMark],
    run_labels: Sequence[str],
    current: int,
    title: str,
    width: int = 340,
) -> str:
    """p50 per run: a line through the valid points (an open dot is a noisy result), the
    current run shaded, flags ringed red (regression) or green (improvement), a dashed line
    where a flagged shift began, a red cross on the axis for a run where the case failed."""
    height, left, right, top, bottom = 150, 50, width - 10, 10, 30
    parts = [open_plot("trend", width, height, len(points), title)]
    if not points:
        parts.append(text_at(width / 2, height / 2, "no p50 in these runs", "middle"))
        return "".join([*parts, "</svg>"])
    count = max(len(run_labels), 1)
    x = Scale(0, max(count - 1, 1), left + 8, right - 8)
    low, high = padded([p.value for p in points])
    y = Scale(low, high, height - bottom, top)
    parts += y_axis(y, left, right, nice_ticks(low, high, 4), "p50 ms")
    parts.append(
        f'<line x1="{num(left)}" x2="{num(right)}" y1="{height - bottom}" y2="{height - bottom}"'
        f' stroke="{MUTED}"/>'
    )
    step = max(x(1) - x(0), 6.0) if count > 1 else 20.0
    parts.append(
        f'<rect x="{num(x(current) - step / 2)}" y="{top}" width="{num(step)}"'
        f' height="{height - bottom - top}" fill="#fff3c4"><title>this run</title></rect>'
    )
    # This run's label first, then the first run's and a few between, none overlapping.
    labelled: list[float] = []
    for index in [current, 0, *range(0, count, max(1, count // 5))]:
        if index < len(run_labels) and all(abs(x(index) - at) > 40 for at in labelled):
            half = len(run_labels[index]) * CHAR_W / 2
            centre = min(max(x(index), left + half), width - 2 - half)
            parts.append(text_at(centre, height - bottom + 13, run_labels[index], "middle"))
            labelled.append(x(index))
    for mark in marks:
        if mark.kind == "change":
            mx = x(mark.index) - step / 2
            parts.append(
                f'<line class="change" x1="{num(mx)}" x2="{num(mx)}" y1="{top}"'
                f' y2="{height - bottom}" stroke="{BAD}" stroke-dasharray="4 3">'
                f"<title>{escape(mark.tip)}</title></line>"
            )
        elif mark.kind == "failed":
            mx, my = x(mark.index), height - bottom
            parts.append(
                f'<path class="failed" d="M{num(mx - 4)} {num(my - 4)}l8 8m0 -8l-8 8"'
                f' stroke="{BAD}" stroke-width="2"><title>{escape(mark.tip)}</title></path>'
            )
    ordered = sorted(points, key=lambda p: p.index)
    line = [p for p in ordered if p.valid]
    if len(line) > 1:
        coords = " ".join(f"{num(x(p.index))},{num(y(p.value))}" for p in line)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{PALETTE[0]}" stroke-width="1.5"/>'
        )
    at = {p.index: p for p in ordered}
    for mark in marks:
        if mark.kind in ("regression", "improvement") and mark.index in at:
            p = at[mark.index]
            colour = BAD if mark.kind == "regression" else GOOD
            parts.append(
                f'<circle class="flag {mark.kind}" cx="{num(x(p.index))}" cy="{num(y(p.value))}"'
                f' r="7.5" fill="none" stroke="{colour}" stroke-width="2.5">'
                f"<title>{escape(mark.tip)}</title></circle>"
            )
    for p in ordered:
        fill = PALETTE[0] if p.valid else "#fff"
        radius = 4 if p.index == current else 2.8
        parts.append(
            f'<circle class="pt" cx="{num(x(p.index))}" cy="{num(y(p.value))}" r="{radius}"'
            f' fill="{fill}" stroke="{PALETTE[0]}"><title>{escape(p.tip)}</title></circle>'
        )
    return "".join([*parts, "</svg>"])
