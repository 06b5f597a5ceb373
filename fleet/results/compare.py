"""Result tables for the terminal: the runs, one run, and the cross-hardware comparison.

Everything here reads the local store, so it works without InfluxDB and with results that
have not been pushed yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, get_type_hints

from fleet.errors import ConfigError
from fleet.results.record import SERIES_KEYS, TAG_KEYS, Record, tag
from fleet.results.store import RunInfo, Store
from fleet.results.tables import format_table, number, results_table, when
from fleet_agent.protocol import ResultFields

# What identifies a model variant on a device, apart from the device itself.
VARIANT_KEYS = SERIES_KEYS
# The parts of a variant: compared across one of them, the other names the rows.
_PARTS = {"format": "precision", "precision": "format"}


def runs_table(store: Store) -> str:
    rows = [
        [
            run.run_id,
            run.suite,
            ",".join(run.devices),
            when(run.started_ns),
            str(run.results),
            _exit(run.exit_code),
        ]
        for run in store.runs()
    ]
    columns = ["run", "suite", "devices", "started (UTC)", "results", "exit"]
    return format_table(columns, rows, f"runs in {store.path}")


# Exit codes of a run stopped by a signal; the run ended, but not by itself.
_STOPPED = {130: "130 interrupted (Ctrl-C)", 143: "143 interrupted (SIGTERM)"}


def _exit(code: int | None) -> str:
    return "running" if code is None else _STOPPED.get(code, str(code))


def no_results(run: RunInfo) -> str:
    """What a run without a single result is, in place of its empty table."""
    if run.exit_code is None:
        return "no results yet: the run is still going (or its controller was killed)"
    if not run.devices:
        return "no results: no device was selected (an empty --shard?)"
    if run.exit_code in _STOPPED:
        return f"no results: {_STOPPED[run.exit_code]} before any case ended"
    return f"no results: the run ended (exit {run.exit_code}) before any case ran"


def run_table(store: Store, run_id: str | None) -> str:
    """The table `fleet run` printed at the end of the run, under a title naming the run."""
    run = store.find_run(run_id)
    title = f"run {run.run_id} ({run.suite}, started {when(run.started_ns)} UTC)"
    return results_table(store.records(run.run_id, "result"), title, no_results(run))


def runs_document(store: Store) -> dict[str, Any]:
    """`fleet results list --json` (docs/cli.md)."""
    return {"store": str(store.path), "runs": [asdict(run) for run in store.runs()]}


def run_document(store: Store, run_id: str | None) -> dict[str, Any]:
    """`fleet results show --json` and `fleet run --json` (docs/cli.md): the run as
    `results list --json` gives it, and its results as `results export --format json`."""
    run = store.find_run(run_id)
    results = [record_document(r) for r in store.records(run.run_id, "result")]
    return {"run": asdict(run), "results": results}


def record_document(record: Record) -> dict[str, Any]:
    """A record in a `--json` listing: as `fleet results export --format json` gives it."""
    return {"time_ns": record.time_ns, "tags": dict(record.tags), "fields": dict(record.fields)}


@dataclass(frozen=True)
class Comparison:
    """Variants down (named by `keys`), values of the tag `by` across (`columns`); each cell
    the latest result there, None where there is none."""

    metric: str
    by: str
    model: str | None
    run_id: str | None
    keys: list[str]
    columns: list[str]
    rows: list[tuple[tuple[str, ...], list[Record | None]]]


def compare(
    store: Store,
    by: str = "device",
    model: str | None = None,
    metric: str = "latency_ms_p50",
    run_id: str | None = None,
) -> Comparison:
    """Latest across all runs (or within `run_id`), so devices measured on different nights
    still meet in one table."""
    if by not in TAG_KEYS:
        raise ConfigError(f"--by {by!r} is not a tag; choose one of {', '.join(TAG_KEYS)}")
    run = store.find_run(run_id).run_id if run_id else None
    records: Sequence[Record] = store.records(run, "result")
    if model is not None:
        records = [r for r in records if r.tags.get("model") == model]
    _check_metric(metric, records)
    keys = [k for k in VARIANT_KEYS if k != by]
    if by in _PARTS:
        keys[keys.index("variant")] = _PARTS[by]
    latest: dict[tuple[tuple[str, ...], str], Record] = {}
    for r in records:
        cell = (tuple(_value(r, k) for k in keys), _value(r, by))
        if cell not in latest or r.time_ns >= latest[cell].time_ns:
            latest[cell] = r
    # A key no result has (shape, for models whose shapes are fixed) is no column.
    shown = [i for i, _ in enumerate(keys) if any(row[i] for row, _ in latest)]
    columns = sorted({c for _, c in latest})
    rows = [
        (tuple(variant[i] for i in shown), [latest.get((variant, c)) for c in columns])
        for variant in sorted({v for v, _ in latest})
    ]
    return Comparison(metric, by, model, run, [keys[i] for i in shown], columns, rows)


def _check_metric(metric: str, records: Sequence[Record]) -> None:
    """A name no result could carry is a typo: say so, with the names there are (those
    these results carry, else every number the agent measures)."""
    present = {name for r in records for name, v in r.fields.items() if isinstance(v, float)}
    if metric in present or (not present and metric in _MEASURED):
        return
    choices = ", ".join(sorted(present or _MEASURED))
    raise ConfigError(f"--metric {metric!r} is not a number these results have; one of {choices}")


# Every number a result event may carry (the protocol's float fields).
_MEASURED = frozenset(k for k, v in get_type_hints(ResultFields).items() if v is float)


def compare_table(
    store: Store,
    by: str = "device",
    model: str | None = None,
    metric: str = "latency_ms_p50",
    run_id: str | None = None,
) -> str:
    """`compare(...)` as text."""
    return comparison_table(compare(store, by, model, metric, run_id))


def comparison_table(c: Comparison) -> str:
    """A case that did not produce numbers shows its status."""
    rows = []
    for variant, cells in c.rows:
        row = list(variant)
        for found in cells:
            if found is None:
                row.append("")
            elif found.number(c.metric) is not None:
                row.append(number(found, c.metric))
            else:
                row.append(found.status if found.status != "ok" else "-")
        rows.append(row)
    title = f"{c.metric} by {c.by}" + (f" for {c.model}" if c.model else "")
    return format_table([*c.keys, *c.columns], rows, title + " (latest result per cell)")


def compare_document(comparison: Comparison) -> dict[str, Any]:
    """`fleet results compare --json` (docs/cli.md): each cell its value, status and run."""
    c = comparison
    rows = [
        {
            "variant": dict(zip(c.keys, variant, strict=True)),
            "cells": {
                column: None
                if found is None
                else {
                    "value": found.number(c.metric),
                    "status": found.status,
                    "run_id": found.run_id,
                }
                for column, found in zip(c.columns, cells, strict=True)
            },
        }
        for variant, cells in c.rows
    ]
    return {"metric": c.metric, "by": c.by, "model": c.model, "run_id": c.run_id, "rows": rows}


def _value(record: Record, key: str) -> str:
    """A tag as compare reads it: format and precision are the parts of the variant as
    converted, so int8's two modes stay apart (precision "int8-static")."""
    if key in _PARTS:
        fmt, _, precision = tag(record.tags, "variant").partition(":")
        return fmt if key == "format" else precision
    return tag(record.tags, key)
