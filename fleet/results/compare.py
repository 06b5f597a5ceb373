"""Result tables for the terminal: the runs, one run, and the cross-hardware comparison.

Everything here reads the local store, so it works without InfluxDB and with results that
have not been pushed yet.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from fleet.errors import ConfigError
from fleet.results.record import TAG_KEYS, Record
from fleet.results.store import RunInfo, Store

# What identifies a model variant on a device, apart from the device itself.
VARIANT_KEYS = ("model", "format", "precision", "runtime", "provider", "batch", "threads")


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]

    def render(self) -> str:
        """Aligned plain text: numbers to the right, words to the left."""
        cells = [self.columns, *self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        numeric = [all(_is_number(row[i]) for row in self.rows) for i in range(len(widths))]
        lines = [
            "  ".join(
                (c.rjust(w) if right else c.ljust(w))
                for c, w, right in zip(row, widths, numeric, strict=True)
            ).rstrip()
            for row in cells
        ]
        return "\n".join([self.title, *lines]) if self.rows else f"{self.title}\n(nothing yet)"


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return cell in ("", "-")
    return True


def when(time_ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time_ns / 1e9))


def find_run(store: Store, run_id: str | None) -> RunInfo:
    """The run named by its id or a unique prefix of it; the latest run when None."""
    runs = store.runs()
    if not runs:
        raise ConfigError(f"{store.path}: no runs yet; `fleet run SUITE` makes one")
    if run_id is None:
        return runs[-1]
    matches = [r for r in runs if r.run_id.startswith(run_id)]
    if len(matches) != 1:
        problem = "no run" if not matches else f"{len(matches)} runs"
        raise ConfigError(
            f"{store.path}: {problem} matching {run_id!r}; `fleet results list` shows the run ids"
        )
    return matches[0]


def runs_table(store: Store) -> Table:
    rows = [
        [
            run.run_id,
            run.suite,
            ",".join(run.devices),
            when(run.started_ns),
            str(run.results),
            "running" if run.exit_code is None else str(run.exit_code),
        ]
        for run in store.runs()
    ]
    columns = ["run", "suite", "devices", "started (UTC)", "results", "exit"]
    return Table(f"runs in {store.path}", columns, rows)


def _number(record: Record, name: str) -> str:
    value = record.number(name)
    return "-" if value is None else f"{value:.3f}"


def run_table(store: Store, run_id: str | None) -> Table:
    """One row per case of the run: where, what, how fast, how big, how accurate."""
    run = find_run(store, run_id)
    rows = []
    for r in store.records(run.run_id, "result"):
        t = r.tags
        passed = r.fields.get("passed")
        rows.append(
            [
                t.get("device", "?"),
                t.get("model", "?"),
                f"{t.get('format', '?')}:{t.get('precision', '?')}",
                f"{t.get('runtime', '?')}/{t.get('provider', '?')}",
                r.status,
                _number(r, "latency_ms_p50"),
                _number(r, "latency_ms_p95"),
                _number(r, "peak_rss_mb"),
                _number(r, "accuracy_top1"),
                _number(r, "accuracy_drop_pp"),
                "-" if passed is None else "yes" if passed else "NO",
            ]
        )
    columns = ["device", "model", "variant", "runtime", "status", "p50 ms", "p95 ms"]
    columns += ["peak MB", "top-1", "drop pp", "passed"]
    title = f"run {run.run_id} ({run.suite}, started {when(run.started_ns)} UTC)"
    return Table(title, columns, rows)


def compare_table(
    store: Store,
    by: str = "device",
    model: str | None = None,
    metric: str = "latency_ms_p50",
    run_id: str | None = None,
) -> Table:
    """Variants down, values of the tag `by` across; each cell the latest result there.

    Latest across all runs (or within `run_id`), so devices measured on different nights
    still meet in one table. A case that did not produce numbers shows its status.
    """
    if by not in TAG_KEYS:
        raise ConfigError(f"--by {by!r} is not a tag; choose one of {', '.join(TAG_KEYS)}")
    records: Sequence[Record] = store.records(
        find_run(store, run_id).run_id if run_id else None, "result"
    )
    if model is not None:
        records = [r for r in records if r.tags.get("model") == model]
    keys = [k for k in VARIANT_KEYS if k != by]
    latest: dict[tuple[tuple[str, ...], str], Record] = {}
    for r in records:
        cell = (tuple(r.tags.get(k, "") for k in keys), r.tags.get(by, ""))
        if cell not in latest or r.time_ns >= latest[cell].time_ns:
            latest[cell] = r
    columns_by = sorted({c for _, c in latest})
    rows = []
    for variant in sorted({v for v, _ in latest}):
        row = list(variant)
        for column in columns_by:
            found = latest.get((variant, column))
            if found is None:
                row.append("")
            elif found.number(metric) is not None:
                row.append(_number(found, metric))
            else:
                row.append(found.status if found.status != "ok" else "-")
        rows.append(row)
    title = f"{metric} by {by}" + (f" for {model}" if model else "") + " (latest result per cell)"
    return Table(title, [*keys, *columns_by], rows)
