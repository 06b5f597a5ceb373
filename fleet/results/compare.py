"""Result tables for the terminal: the runs, one run, and the cross-hardware comparison.

Everything here reads the local store, so it works without InfluxDB and with results that
have not been pushed yet.
"""

from __future__ import annotations

from collections.abc import Sequence

from fleet.errors import ConfigError
from fleet.results.record import SERIES_KEYS, TAG_KEYS, Record, tag
from fleet.results.store import Store
from fleet.results.tables import format_table, number, results_table, when

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


def run_table(store: Store, run_id: str | None) -> str:
    """The table `fleet run` printed at the end of the run, under a title naming the run."""
    run = store.find_run(run_id)
    title = f"run {run.run_id} ({run.suite}, started {when(run.started_ns)} UTC)"
    return results_table(store.records(run.run_id, "result"), title)


def compare_table(
    store: Store,
    by: str = "device",
    model: str | None = None,
    metric: str = "latency_ms_p50",
    run_id: str | None = None,
) -> str:
    """Variants down, values of the tag `by` across; each cell the latest result there.

    Latest across all runs (or within `run_id`), so devices measured on different nights
    still meet in one table. A case that did not produce numbers shows its status.
    """
    if by not in TAG_KEYS:
        raise ConfigError(f"--by {by!r} is not a tag; choose one of {', '.join(TAG_KEYS)}")
    records: Sequence[Record] = store.records(
        store.find_run(run_id).run_id if run_id else None, "result"
    )
    if model is not None:
        records = [r for r in records if r.tags.get("model") == model]
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
    columns_by = sorted({c for _, c in latest})
    rows = []
    for variant in sorted({v for v, _ in latest}):
        row = [variant[i] for i in shown]
        for column in columns_by:
            found = latest.get((variant, column))
            if found is None:
                row.append("")
            elif found.number(metric) is not None:
                row.append(number(found, metric))
            else:
                row.append(found.status if found.status != "ok" else "-")
        rows.append(row)
    title = f"{metric} by {by}" + (f" for {model}" if model else "") + " (latest result per cell)"
    return format_table([*(keys[i] for i in shown), *columns_by], rows, title)


def _value(record: Record, key: str) -> str:
    """A tag as compare reads it: format and precision are the parts of the variant as
    converted, so int8's two modes stay apart (precision "int8-static")."""
    if key in _PARTS:
        fmt, _, precision = tag(record.tags, "variant").partition(":")
        return fmt if key == "format" else precision
    return tag(record.tags, key)
