"""Small SVG plots for the HTML report, drawn here so that the report fetches nothing.

Each plot is one `<svg class="plot">` string (`noplot` when it has no data to show): inline in
the page, every text escaped, each data point an element of class `pt` with a `<title>` (the
browser's own tooltip, no script). `data-points` says how many points were drawn; the
report's check script counts them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

# Colour-blind safe (Okabe–Ito), for categories in turn.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000")
INK = "#222"
GRID = "#e3e3e3"
MUTED = "#777"
BAD = "#c0392b"
GOOD = "#1e8449"
CHAR_W = 6.3  # px per character of the 11 px sans-serif the plots use, near enough to lay out


def fmt(value: float) -> str:
    """A number as a label: four significant digits, no exponent for everyday sizes, a whole
    number without decimals."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if 1e-3 <= abs(value) < 1e4:
        return f"{value:.4g}"
    if 1e4 <= abs(value) < 1e9:
        return f"{value:.0f}"
    return f"{value:.3g}"


def _n(value: float) -> str:
    """A coordinate: one decimal is plenty on screen and keeps the page small."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2 or 5 times a power of ten apart)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-6:
        if value >= low - step * 1e-6:
            ticks.append(round(value, 12))
        value += step
    return ticks


def padded(values: Sequence[float], from_zero: bool = False) -> tuple[float, float]:
    """A domain holding every value, with a little room around it (from 0 when asked)."""
    low, high = min(values), max(values)
    if from_zero:
        low = min(low, 0.0)
    if high == low:
        span = abs(high) * 0.1 or 1.0
        return (low if from_zero else low - span), high + span
    room = (high - low) * 0.08
    return (low if from_zero else low - room), high + room


@dataclass(frozen=True)
class Scale:
    """Map from data (low..high) to pixels (start..end): linear, or logarithmic (low > 0)."""

    low: float
    high: float
    start: float
    end: float
    log: bool = False

    def __call__(self, value: float) -> float:
        low, high = self.low, self.high
        if self.log:
            low, high, value = math.log10(low), math.log10(high), math.log10(max(value, self.low))
        if high == low:
            return (self.start + self.end) / 2
        return self.start + (value - low) / (high - low) * (self.end - self.start)


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


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}"{extra}>{escape(text)}</text>'


def _open(kind: str, width: int, height: int, points: int, label: str) -> str:
    """A plot with its points is of class `plot`; one that has nothing to show only says so
    (class `noplot`), so that a page can check that every `plot` was drawn."""
    css = "plot" if points else "noplot"
    return (
        f'<svg class="{css}" data-kind="{kind}" data-points="{points}" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(label)}" font-family="sans-serif" font-size="11" fill="{INK}">'
    )


def _x_axis(scale: Scale, y: float, top: float, ticks: Sequence[float], title: str) -> list[str]:
    parts = []
    for tick in ticks:
        x = scale(tick)
        parts.append(
            f'<line x1="{_n(x)}" x2="{_n(x)}" y1="{_n(top)}" y2="{_n(y)}" stroke="{GRID}"/>'
        )
        parts.append(_text(x, y + 13, fmt(tick), "middle"))
    parts.append(
        f'<line x1="{_n(scale.start)}" x2="{_n(scale.end)}" y1="{_n(y)}" y2="{_n(y)}"'
        f' stroke="{MUTED}"/>'
    )
    if title:
        parts.append(_text((scale.start + scale.end) / 2, y + 27, title, "middle"))
    return parts


def _y_axis(
    scale: Scale, x: float, right: float, ticks: Sequence[float], title: str, percent: bool = False
) -> list[str]:
    parts = []
    for tick in ticks:
        y = scale(tick)
        parts.append(
            f'<line x1="{_n(x)}" x2="{_n(right)}" y1="{_n(y)}" y2="{_n(y)}" stroke="{GRID}"/>'
        )
        label = fmt(tick * 100) + "%" if percent else fmt(tick)
        parts.append(_text(x - 4, y + 4, label, "end"))
    parts.append(
        f'<line x1="{_n(x)}" x2="{_n(x)}" y1="{_n(scale.end)}" y2="{_n(scale.start)}"'
        f' stroke="{MUTED}"/>'
    )
    if title:
        middle = (scale.start + scale.end) / 2
        parts.append(
            f'<text x="12" y="{_n(middle)}" text-anchor="middle"'
            f' transform="rotate(-90 12 {_n(middle)})">{escape(title)}</text>'
        )
    return parts


def _label_width(labels: Sequence[str], most: int = 300) -> int:
    return int(min(most, max((len(label) for label in labels), default=4) * CHAR_W + 14))


# --- latency: p50 with its 95 % interval, p95, p99, one row per variant ---------------------


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
    left = _label_width([r.label for r in rows])
    right = width - 16
    height = top + row_h * max(len(rows), 1) + bottom
    values = [
        v for r in rows for v in (r.p50, r.low, r.high, r.p95, r.p99) if v is not None and v >= 0
    ]
    drawn = sum(r.p50 is not None for r in rows)
    parts = [_open("latency", width, height, drawn, title)]
    if not values:  # every case failed: their statuses, and no axis
        for i, row in enumerate(rows):
            y = top + row_h * i + row_h / 2
            parts.append(_text(left - 8, y + 4, row.label, "end"))
            parts.append(_text(left + 6, y + 4, row.status, extra=f' fill="{BAD}"'))
        parts.append(_text(width / 2, height - 12, "no latency measured", "middle"))
        return "".join([*parts, "</svg>"])
    positive = [v for v in values if v > 0]
    axis_y = top + row_h * len(rows) + 4
    if positive and max(positive) > LOG_RATIO * min(positive):
        low, high = min(positive) / 1.3, max(positive) * 1.3
        x = Scale(low, high, left, right, log=True)
        parts += _x_axis(x, axis_y, top, log_ticks(low, high), "latency (ms, log scale)")
    else:
        low, high = padded(values, from_zero=True)
        x = Scale(low, high, left, right)
        parts += _x_axis(x, axis_y, top, nice_ticks(low, high), "latency (ms)")
    for i, row in enumerate(rows):
        y = top + row_h * i + row_h / 2
        parts.append(_text(left - 8, y + 4, row.label, "end"))
        if row.p50 is None:
            parts.append(_text(left + 6, y + 4, row.status, extra=f' fill="{BAD}"'))
            continue
        tip = f"{row.label}: p50 {fmt(row.p50)} ms"
        if row.low is not None and row.high is not None:
            tip += f" (95% CI {fmt(row.low)}–{fmt(row.high)})"
            parts.append(
                f'<line class="ci" x1="{_n(x(row.low))}" x2="{_n(x(row.high))}" y1="{_n(y)}"'
                f' y2="{_n(y)}" stroke="{PALETTE[0]}" stroke-width="2"/>'
            )
            for end in (row.low, row.high):
                parts.append(
                    f'<line x1="{_n(x(end))}" x2="{_n(x(end))}" y1="{_n(y - 5)}"'
                    f' y2="{_n(y + 5)}" stroke="{PALETTE[0]}" stroke-width="1.5"/>'
                )
        if row.p95 is not None:
            tip += f", p95 {fmt(row.p95)}"
            px = x(row.p95)
            parts.append(
                f'<path d="M{_n(px)} {_n(y - 5)}l5 9h-10z" fill="none"'
                f' stroke="{PALETTE[1]}" stroke-width="1.5"><title>{escape(row.label)}: p95'
                f" {escape(fmt(row.p95))} ms</title></path>"
            )
        if row.p99 is not None:
            tip += f", p99 {fmt(row.p99)}"
            px = x(row.p99)
            parts.append(
                f'<path d="M{_n(px)} {_n(y - 5)}l5 5l-5 5l-5 -5z" fill="none"'
                f' stroke="{PALETTE[5]}" stroke-width="1.5"><title>{escape(row.label)}: p99'
                f" {escape(fmt(row.p99))} ms</title></path>"
            )
        parts.append(
            f'<circle class="pt" cx="{_n(x(row.p50))}" cy="{_n(y)}" r="4.5"'
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
    parts = [_open("pareto", width, height, len(points), title)]
    if not points:
        parts.append(_text(width / 2, height / 2, "no accuracy measured", "middle"))
        return "".join([*parts, "</svg>"])
    x_low, x_high = padded([p.x for p in points], from_zero=True)
    y_low, y_high = padded([p.y for p in points])
    if max(p.y for p in points) <= 1.0:
        y_low, y_high = max(y_low, 0.0), min(y_high, 1.0)  # a fraction: 0 to 100 %
        if y_high - y_low < 0.02:
            y_low = max(0.0, y_high - 0.02)
    x = Scale(x_low, x_high, left, right)
    y = Scale(y_low, y_high, height - bottom, top)
    parts += _x_axis(x, height - bottom, top, nice_ticks(x_low, x_high), x_title)
    parts += _y_axis(y, left, right, nice_ticks(y_low, y_high), y_title, percent=True)
    for group in sorted({p.group for p in points}):
        front = sorted((p for p in points if p.on_front and p.group == group), key=lambda p: p.x)
        if len(front) > 1:
            path = f"M{_n(x(front[0].x))} {_n(y(front[0].y))}"
            for point in front[1:]:
                path += f"H{_n(x(point.x))}V{_n(y(point.y))}"
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
                f'<circle cx="{_n(px)}" cy="{_n(py)}" r="8.5" fill="none" stroke="{colour}"'
                ' stroke-width="1.8"/>'
            )
            if p.tag:
                parts += _tag(p.tag, px, py, right, taken)
        parts.append(
            f'<circle class="pt" cx="{_n(px)}" cy="{_n(py)}" r="4.5" fill="{colour}"'
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
            return [_text(left, top + 9, text, extra=' font-size="10"')]
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
    left = _label_width([r.label for r in rows])
    right = width - 50
    height = top + group_h * max(len(rows), 1) + bottom
    values = [v for r in rows for v in r.values if v is not None]
    parts = [_open("memory", width, height, len(values), title)]
    if not values:
        parts.append(_text(width / 2, height / 2, "no memory measured", "middle"))
        return "".join([*parts, "</svg>"])
    low, high = padded(values, from_zero=True)
    x = Scale(low, high, left, right)
    axis_y = top + group_h * len(rows)
    parts += _x_axis(x, axis_y, top, nice_ticks(low, high), "MiB")
    for i, row in enumerate(rows):
        y0 = top + group_h * i
        parts.append(_text(left - 8, y0 + group_h / 2 + 2, row.label, "end"))
        if all(value is None for value in row.values):
            parts.append(_text(left + 6, y0 + group_h / 2 + 2, row.status, extra=f' fill="{BAD}"'))
        for j, (name, value) in enumerate(zip(names, row.values, strict=True)):
            if value is None:
                continue
            y = y0 + j * bar_h
            w = max(x(value) - x(0.0), 1.0)
            parts.append(
                f'<rect class="pt" x="{_n(x(0.0))}" y="{_n(y)}" width="{_n(w)}"'
                f' height="{bar_h - 1}" fill="{PALETTE[j % len(PALETTE)]}">'
                f"<title>{escape(f'{row.label}: {name} {fmt(value)} MiB')}</title></rect>"
            )
            parts.append(_text(x(0.0) + w + 3, y + bar_h - 1, fmt(value), extra=' font-size="8"'))
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
    parts = [_open("trend", width, height, len(points), title)]
    if not points:
        parts.append(_text(width / 2, height / 2, "no p50 in these runs", "middle"))
        return "".join([*parts, "</svg>"])
    count = max(len(run_labels), 1)
    x = Scale(0, max(count - 1, 1), left + 8, right - 8)
    low, high = padded([p.value for p in points])
    y = Scale(low, high, height - bottom, top)
    parts += _y_axis(y, left, right, nice_ticks(low, high, 4), "p50 ms")
    parts.append(
        f'<line x1="{_n(left)}" x2="{_n(right)}" y1="{height - bottom}" y2="{height - bottom}"'
        f' stroke="{MUTED}"/>'
    )
    step = max(x(1) - x(0), 6.0) if count > 1 else 20.0
    parts.append(
        f'<rect x="{_n(x(current) - step / 2)}" y="{top}" width="{_n(step)}"'
        f' height="{height - bottom - top}" fill="#fff3c4"><title>this run</title></rect>'
    )
    # This run's label first, then the first run's and a few between, none overlapping.
    labelled: list[float] = []
    for index in [current, 0, *range(0, count, max(1, count // 5))]:
        if index < len(run_labels) and all(abs(x(index) - at) > 40 for at in labelled):
            half = len(run_labels[index]) * CHAR_W / 2
            centre = min(max(x(index), left + half), width - 2 - half)
            parts.append(_text(centre, height - bottom + 13, run_labels[index], "middle"))
            labelled.append(x(index))
    for mark in marks:
        if mark.kind == "change":
            mx = x(mark.index) - step / 2
            parts.append(
                f'<line class="change" x1="{_n(mx)}" x2="{_n(mx)}" y1="{top}"'
                f' y2="{height - bottom}" stroke="{BAD}" stroke-dasharray="4 3">'
                f"<title>{escape(mark.tip)}</title></line>"
            )
        elif mark.kind == "failed":
            mx, my = x(mark.index), height - bottom
            parts.append(
                f'<path class="failed" d="M{_n(mx - 4)} {_n(my - 4)}l8 8m0 -8l-8 8"'
                f' stroke="{BAD}" stroke-width="2"><title>{escape(mark.tip)}</title></path>'
            )
    ordered = sorted(points, key=lambda p: p.index)
    line = [p for p in ordered if p.valid]
    if len(line) > 1:
        coords = " ".join(f"{_n(x(p.index))},{_n(y(p.value))}" for p in line)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{PALETTE[0]}" stroke-width="1.5"/>'
        )
    at = {p.index: p for p in ordered}
    for mark in marks:
        if mark.kind in ("regression", "improvement") and mark.index in at:
            p = at[mark.index]
            colour = BAD if mark.kind == "regression" else GOOD
            parts.append(
                f'<circle class="flag {mark.kind}" cx="{_n(x(p.index))}" cy="{_n(y(p.value))}"'
                f' r="7.5" fill="none" stroke="{colour}" stroke-width="2.5">'
                f"<title>{escape(mark.tip)}</title></circle>"
            )
    for p in ordered:
        fill = PALETTE[0] if p.valid else "#fff"
        radius = 4 if p.index == current else 2.8
        parts.append(
            f'<circle class="pt" cx="{_n(x(p.index))}" cy="{_n(y(p.value))}" r="{radius}"'
            f' fill="{fill}" stroke="{PALETTE[0]}"><title>{escape(p.tip)}</title></circle>'
        )
    return "".join([*parts, "</svg>"])
