"""What every plot of `fleet.results.svg` is drawn with: the colours, numbers as labels,
round ticks, scales from data to pixels, text, the plot's own `<svg>` tag and its axes.
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


def num(value: float) -> str:
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


def text_at(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{num(x)}" y="{num(y)}" text-anchor="{anchor}"{extra}>{escape(text)}</text>'


def open_plot(kind: str, width: int, height: int, points: int, label: str) -> str:
    """A plot with its points is of class `plot`; one that has nothing to show only says so
    (class `noplot`), so that a page can check that every `plot` was drawn."""
    css = "plot" if points else "noplot"
    return (
        f'<svg class="{css}" data-kind="{kind}" data-points="{points}" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(label)}" font-family="sans-serif" font-size="11" fill="{INK}">'
    )


def x_axis(scale: Scale, y: float, top: float, ticks: Sequence[float], title: str) -> list[str]:
    parts = []
    for tick in ticks:
        x = scale(tick)
        parts.append(
            f'<line x1="{num(x)}" x2="{num(x)}" y1="{num(top)}" y2="{num(y)}" stroke="{GRID}"/>'
        )
        parts.append(text_at(x, y + 13, fmt(tick), "middle"))
    parts.append(
        f'<line x1="{num(scale.start)}" x2="{num(scale.end)}" y1="{num(y)}" y2="{num(y)}"'
        f' stroke="{MUTED}"/>'
    )
    if title:
        parts.append(text_at((scale.start + scale.end) / 2, y + 27, title, "middle"))
    return parts


def y_axis(
    scale: Scale, x: float, right: float, ticks: Sequence[float], title: str, percent: bool = False
) -> list[str]:
    parts = []
    for tick in ticks:
        y = scale(tick)
        parts.append(
            f'<line x1="{num(x)}" x2="{num(right)}" y1="{num(y)}" y2="{num(y)}" stroke="{GRID}"/>'
        )
        label = fmt(tick * 100) + "%" if percent else fmt(tick)
        parts.append(text_at(x - 4, y + 4, label, "end"))
    parts.append(
        f'<line x1="{num(x)}" x2="{num(x)}" y1="{num(scale.end)}" y2="{num(scale.start)}"'
        f' stroke="{MUTED}"/>'
    )
    if title:
        middle = (scale.start + scale.end) / 2
        parts.append(
            f'<text x="12" y="{num(middle)}" text-anchor="middle"'
            f' transform="rotate(-90 12 {num(middle)})">{escape(title)}</text>'
        )
    return parts


def label_width(labels: Sequence[str], most: int = 300) -> int:
    return int(min(most, max((len(label) for label in labels), default=4) * CHAR_W + 14))
