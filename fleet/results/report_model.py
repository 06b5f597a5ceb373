"""What a report of one run holds (`Report`, one `Series` per result), and the text both of
its forms show: a case's verdict, a variant's label, a value, a regression record's cells.
`fleet.results.report_html.build_report` fills a `Report` from the store;
`fleet.results.report_html` and `fleet.results.report_markdown` write it out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet.results import svg_primitives
from fleet.results.record import FieldValue, Record, tag
from fleet.results.store import RunInfo

# The columns of `flag_cells`, in order (the first one is the direction).
FLAG_COLUMNS = (
    "",
    "device",
    "variant",
    "metric",
    "baseline ± spread",
    "value",
    "change %",
    "since run",
)


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
        return is_valid(self.record)


@dataclass
class Report:
    """Everything the report shows about one run."""

    run: RunInfo
    runs: list[RunInfo]  # the suite's runs up to this one, oldest first (report_html.TREND_RUNS)
    results: list[Record]  # this run's `result` records, by device and variant
    devices: list[str]
    device_facts: dict[str, Record] = field(default_factory=dict)
    summary: Record | None = None  # the `run` record
    flags: list[Record] = field(default_factory=list)  # this run's `regression` records
    series: list[Series] = field(default_factory=list)
    varying: tuple[str, ...] = ()  # report_html.VARIANT_KEYS that differ between its cases
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

    def sorted_flags(self) -> list[Record]:
        """The run's `regression` records, regressions first, by device."""
        return sorted(
            self.flags,
            key=lambda r: (r.fields.get("direction") != "regression", r.tags.get("device", "")),
        )


def verdict(record: Record) -> str:
    """pass, fail (a budget broken), noisy (passed, not valid) or the status (timeout, …)."""
    if record.status != "ok":
        return record.status
    if record.fields.get("passed") is False:
        return "fail"
    return "noisy" if record.fields.get("valid") is False else "pass"


def is_valid(record: Record) -> bool:
    return record.status == "ok" and record.fields.get("valid") is not False


def variant_label(tags: Mapping[str, str], varying: Sequence[str]) -> str:
    """'digits_cnn onnx:int8-static' (and the shape, where one was chosen), with
    runtime/provider, batch, threads when they vary."""
    label = f"{tags.get('model', '?')} {tag(tags, 'variant') or '?'}"
    if "shape" in tags:
        label += f" {tags['shape']}"
    if "runtime" in varying or "provider" in varying:
        label += f" {tags.get('runtime', '?')}/{tags.get('provider', '?')}"
    if "batch" in varying:
        label += f" b{tags.get('batch', '?')}"
    if "threads" in varying:
        label += f" t{tags.get('threads', '?')}"
    return label


def cell(value: FieldValue | None, fmt: str = ".4g") -> str:
    """A value as the text of a table cell; `-` for none."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if fmt == ".4g":
            return svg_primitives.fmt(value)
        return format(value, fmt)
    return str(value)


def flag_cells(flag: Record, varying: Sequence[str]) -> list[str]:
    """A `regression` record as the text of the cells under FLAG_COLUMNS (not escaped)."""

    def number(name: str, fmt: str = ".4g") -> str:
        return cell(flag.number(name), fmt)

    return [
        str(flag.fields.get("direction", "")),
        flag.tags.get("device", "?"),
        variant_label(flag.tags, varying),
        flag.tags.get("metric", "?"),
        f"{number('baseline')} ± {number('spread', '.2g')}",
        number("value"),
        number("change_pct", "+.1f"),
        str(flag.fields.get("since_run", "-")),
    ]
