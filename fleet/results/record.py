"""The result record: the unit everything downstream of a run consumes."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

FieldValue = float | bool | str

# Low-cardinality dimensions people filter and group by (InfluxDB tags).
TAG_KEYS = (
    "suite",
    "device",
    "device_class",
    "arch",
    "os",
    "runtime",
    "provider",
    "provider_options",
    "gpu",
    "model",
    "format",
    "precision",
    "variant",
    "shape",
    "batch",
    "threads",
)
# What tells one series of results from another on a device: the model, the variant as
# converted (two int8 modes are two series), the input shapes where the suite chose them,
# and what ran it how (on which GPU of a server).
SERIES_KEYS = (
    "model",
    "variant",
    "shape",
    "runtime",
    "provider",
    "provider_options",
    "gpu",
    "batch",
    "threads",
)

# Outcomes of one case besides "ok" (which alone carries measurements) and "skipped" (the
# device lacks the runtime or provider). FINDINGS are the device's verdict on the model, like a
# broken budget (exit 1); "refused": its conversion already lost more accuracy than allowed.
# ERRORS mean the run itself went wrong (exit 2).
FINDINGS = ("timeout", "out_of_memory", "refused")
ERRORS = ("invalid_model", "error")


def as_field(value: object) -> FieldValue:
    """Numbers become floats: InfluxDB rejects a field whose type changes between points."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return float(value)
    raise TypeError(f"unsupported field value {value!r}")


@dataclass(frozen=True)
class Record:
    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time_ns: int = field(default_factory=time.time_ns)

    @property
    def run_id(self) -> str:
        return str(self.fields.get("run_id", ""))

    @property
    def status(self) -> str:
        return str(self.fields.get("status", "ok"))

    def number(self, name: str) -> float | None:
        value = self.fields.get(name)
        return value if isinstance(value, float) else None


def tag(tags: Mapping[str, str], key: str) -> str:
    """A tag's value, "" when the record has none. A record stored before results had a
    `variant` tag gets one from its format and precision, so its series goes on."""
    if key == "variant" and "variant" not in tags and "format" in tags:
        return f"{tags['format']}:{tags.get('precision', '')}"
    return tags.get(key, "")


def make_record(
    measurement: str, tags: Mapping[str, object], fields: Mapping[str, object], time_ns: int = 0
) -> Record:
    """Build a record with tags as strings and every numeric field as a float."""
    return Record(
        measurement=measurement,
        tags={k: str(v) for k, v in tags.items() if v is not None},
        fields={k: as_field(v) for k, v in fields.items() if v is not None},
        time_ns=time_ns or time.time_ns(),
    )


def settled(flags: Sequence[Record]) -> list[Record]:
    """`regression` records as they stand: a regression or improvement that a rerun did not
    show again (`regressions.confirm`) gives way to the `cleared` record stored for the same
    run, series and metric."""

    def key(r: Record) -> tuple[object, ...]:
        return (r.fields.get("run_id"), *sorted(r.tags.items()))

    cleared = {key(r) for r in flags if r.fields.get("direction") == "cleared"}
    return [r for r in flags if r.fields.get("direction") == "cleared" or key(r) not in cleared]
