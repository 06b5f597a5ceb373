"""The regression records in the store: the open ones, every one flagged, and their table
(`fleet results regressions`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from fleet.regressions.series import is_valid, series_key, series_name
from fleet.results.record import Record
from fleet.results.store import Store
from fleet.results.tables import format_table, when


def open_regressions(store: Store, since_ns: int = 0) -> list[Record]:
    """The regressions not yet fixed: for each series and metric, the latest `regression`
    record, when it is a regression flagged since `since_ns` and no valid result of that
    series came after it (a later valid result was judged, and was not flagged)."""
    latest: dict[tuple[tuple[str, ...], str], Record] = {}
    for record in store.records(measurement="regression"):
        key = (series_key(record), record.tags.get("metric", ""))
        if key not in latest or record.time_ns >= latest[key].time_ns:
            latest[key] = record
    last_valid: dict[tuple[str, ...], int] = {}
    for measurement in ("result", "generation"):
        for record in store.records(measurement=measurement):
            if is_valid(record):
                key_ = series_key(record)
                last_valid[key_] = max(last_valid.get(key_, 0), record.time_ns)
    found = [
        r
        for (series, _), r in latest.items()
        if r.fields.get("direction") == "regression"
        and r.time_ns >= since_ns
        and last_valid.get(series, 0) <= r.time_ns
    ]
    return sorted(found, key=lambda r: r.time_ns)


def flagged(store: Store, since_ns: int = 0) -> list[Record]:
    """Every regression and improvement flagged since `since_ns`, oldest first."""
    found = [r for r in store.records(measurement="regression") if r.time_ns >= since_ns]
    return sorted(found, key=lambda r: r.time_ns)


def regressions_table(records: Iterable[Record], title: str) -> str:
    columns = ["flagged (UTC)", "direction", "series", "metric", "baseline", "spread", "value"]
    rows = [
        [
            when(r.time_ns),
            str(r.fields.get("direction", "")),
            series_name(r.tags),
            r.tags.get("metric", "?"),
            _cell(r.number("baseline")),
            _cell(r.number("spread")),
            _cell(r.number("value")),
            _cell(r.number("change_pct"), "+.1f"),
            str(r.fields.get("since_run", "")),
        ]
        for r in records
    ]
    return format_table([*columns, "change %", "since run"], rows, title)


def _cell(value: float | None, fmt: str = ".4g") -> str:
    return "-" if value is None else format(value, fmt)


SINCE_UNITS: dict[str, int] = {"m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_since(text: str, now: Callable[[], int] = time.time_ns) -> int:
    """'7d', '12h', '30m', '2w' -> that long before now, in ns since the epoch."""
    number, unit = text[:-1], text[-1:]
    if unit not in SINCE_UNITS or not number.isdigit():
        raise ValueError(f"{text!r}: use a number and a unit, such as 7d, 12h, 30m or 2w")
    return now() - int(number) * SINCE_UNITS[unit] * 10**9
