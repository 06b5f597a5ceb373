"""A record as one line of InfluxDB line protocol, built with influxdb_client's `Point`.

The store encodes each record's line as it stores the record (`Store.add`), so a push sends
ready strings: encoding costs more than the server's whole ingest of a point
(docs/benchmarks.md, sink throughput), and a record's line never changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet.results.record import Record

if TYPE_CHECKING:
    from influxdb_client.client.write.point import Point
    from influxdb_client.domain.write_precision import WritePrecision

# WritePrecision.MS, which influxdb-client declares as a plain string. Spelled out because
# importing influxdb_client takes most of a second and every command that opens the store
# imports this module: `to_point` imports it when a line is first encoded.
PRECISION: WritePrecision = "ms"  # type: ignore[assignment]


def load() -> None:
    """Import influxdb_client now, from one thread: two threads importing it at once can
    deadlock (a run's device threads store their first records at the same moment)."""
    import influxdb_client.client.write.point  # noqa: F401


def to_point(record: Record) -> Point:
    """run_id and hashes stay fields (see docs/schema.md); numbers are already floats.

    A name is a tag or a field, never both: a field that repeats a tag's name is left out.
    """
    from influxdb_client.client.write.point import Point

    fields = record.fields
    if fields.keys() & record.tags.keys():
        fields = {name: value for name, value in fields.items() if name not in record.tags}
    point: Point = Point.from_dict(
        {
            "measurement": record.measurement,
            "tags": record.tags,
            "fields": fields,
            "time": record.time_ns // 1_000_000,
        },
        PRECISION,
    )
    return point


def to_line(record: Record) -> str:
    """One line of line protocol; empty when no field has a finite value."""
    return str(to_point(record).to_line_protocol())  # type: ignore[no-untyped-call]
