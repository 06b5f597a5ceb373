"""The InfluxDB sink: sends spooled records in batches, retries a server that is down.

Two dialects share everything but the last step: `v1` POSTs line protocol to `/write`
(InfluxDB 1.x, 2.x's v1 API, 3.x); `v2` hands the same lines to influxdb-client's write API
(2.x, 3.x). Points are built with `influxdb_client.Point` at millisecond precision, so a
record always becomes the same series and timestamp: sending it twice overwrites, never
duplicates. Records leave the spool only when the server accepted them (HTTP 2xx) or
refused them for good (HTTP 400, bisected down to the single bad line).
"""

from __future__ import annotations

import gzip
import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlencode

import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write.point import Point
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from fleet.config import InfluxConfig
from fleet.results.record import Record
from fleet.results.spool import Rejected, Spool
from fleet.results.store import Store

# HTTP statuses worth waiting for: the server is starting, overloaded or behind a proxy that is.
# 0 stands for "no answer at all" (refused, reset, timed out).
RETRY_STATUSES = frozenset({0, 408, 429, 500, 502, 503, 504})
# A batch answered with one of these is split in halves until the bad line is alone.
SPLIT_STATUSES = frozenset({400, 413})
FIRST_DELAY_S = 0.25
MAX_DELAY_S = 8.0
# influxdb-client declares its precision constants as plain strings.
PRECISION: WritePrecision = WritePrecision.MS  # type: ignore[assignment]


@dataclass(frozen=True)
class PushReport:
    sent: int  # records the server accepted in this push
    rejected: list[Rejected]  # records it refused (HTTP 400), set aside with the reason
    pending: int  # records still spooled for this sink after the push
    errors: list[str] = field(default_factory=list)  # why the push stopped early, if it did

    def lines(self) -> list[str]:
        """What to show the user: the counts, then each rejected record and each error."""
        counts = (
            f"InfluxDB: {self.sent} sent, {len(self.rejected)} rejected, {self.pending} spooled"
        )
        rejected = [
            f"rejected record {r.record_id} ({r.measurement}): {r.reason}" for r in self.rejected
        ]
        return [counts, *rejected, *self.errors]


def to_point(record: Record) -> Point:
    """run_id and hashes stay fields (see docs/schema.md); numbers are already floats."""
    point: Point = Point.from_dict(
        {
            "measurement": record.measurement,
            "tags": record.tags,
            "fields": record.fields,
            "time": record.time_ns // 1_000_000,
        },
        PRECISION,
    )
    return point


def to_line(record: Record) -> str:
    """One line of line protocol; empty when no field has a finite value."""
    return str(to_point(record).to_line_protocol())  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Answer:
    status: int  # HTTP status; 0 when no answer came
    message: str


class Writer(Protocol):
    def write(self, body: str) -> Answer: ...


class V1Writer:
    """POST /write with db, rp and precision=ms; gzip, because result lines compress ~4x."""

    def __init__(self, config: InfluxConfig) -> None:
        params = {"db": config.database, "precision": "ms"}
        if config.retention_policy:
            params["rp"] = config.retention_policy
        self.url = f"{config.url}/write?{urlencode(params)}"
        self.headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"}
        if config.token:
            self.headers["Authorization"] = f"Token {config.token.reveal()}"
        elif config.user:
            password = config.password.reveal() if config.password else ""
            self.headers.update(urllib3.make_headers(basic_auth=f"{config.user}:{password}"))
        self.http = urllib3.PoolManager(
            timeout=urllib3.Timeout(total=config.timeout_s), retries=False
        )

    def write(self, body: str) -> Answer:
        try:
            response = self.http.request(
                "POST", self.url, body=gzip.compress(body.encode(), 1), headers=self.headers
            )
        except urllib3.exceptions.HTTPError as exc:
            return Answer(0, _reason(exc))
        return Answer(response.status, _message(response.data))

    def close(self) -> None:
        self.http.clear()


class V2Writer:
    """influxdb-client's synchronous write API; fleet does the batching and retrying itself."""

    def __init__(self, config: InfluxConfig) -> None:
        self.client = InfluxDBClient(
            url=config.url,
            token=config.token.reveal() if config.token else "",
            org=config.org,
            timeout=int(config.timeout_s * 1000),
            enable_gzip=True,
        )
        self.api = self.client.write_api(write_options=SYNCHRONOUS)
        self.bucket, self.org = config.bucket, config.org

    def write(self, body: str) -> Answer:
        try:
            self.api.write(self.bucket, self.org, body, PRECISION)
        except ApiException as exc:
            return Answer(int(exc.status or 0), _message(exc.body or exc.reason or b""))
        except urllib3.exceptions.HTTPError as exc:
            return Answer(0, _reason(exc))
        return Answer(204, "")

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]


def _message(body: bytes | str) -> str:
    """The server's own words: 1.x says {"error": ...}, 2.x and 3.x {"message": ...}."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        decoded = json.loads(text)
    except ValueError:
        return text.strip()[:500]
    if isinstance(decoded, dict):
        return str(decoded.get("error") or decoded.get("message") or text)[:500]
    return text.strip()[:500]


def _reason(exc: urllib3.exceptions.HTTPError) -> str:
    """The innermost cause, e.g. 'Connection refused', without urllib3's object reprs."""
    cause: BaseException = exc
    while isinstance(cause, urllib3.exceptions.MaxRetryError) and cause.reason is not None:
        cause = cause.reason
    if isinstance(cause, urllib3.exceptions.NewConnectionError):
        return str(cause).rsplit(": ", 1)[-1]
    return str(cause) or type(cause).__name__


class _Stop(Exception):
    """The push cannot go on now: the server is down or refuses every write."""


class _Sender:
    """Sends one batch: retries while the time budget lasts, bisects rejected batches."""

    def __init__(
        self,
        writer: Writer,
        spool: Spool,
        config: InfluxConfig,
        sleep: Callable[[float], None],
    ) -> None:
        self.writer, self.spool, self.config, self.sleep = writer, spool, config, sleep
        self.deadline = time.monotonic() + config.retry_total_s
        self.sent = 0
        self.rejected: list[Rejected] = []

    def send_batch(self, batch: Sequence[tuple[int, str, str]]) -> None:
        """`batch` holds (record id, measurement, line) triples."""
        for record_id, measurement, line in batch:
            if not line:  # Point writes nothing when no field has a (finite) value
                self._set_aside(Rejected(record_id, measurement, "no field with a finite value"))
        self.send([item for item in batch if item[2]])

    def send(self, batch: Sequence[tuple[int, str, str]]) -> None:
        if not batch:
            return
        answer = self._post("\n".join(line for _, _, line in batch))
        if 200 <= answer.status < 300:
            self.spool.mark_sent([record_id for record_id, _, _ in batch])
            self.sent += len(batch)
        elif answer.status in SPLIT_STATUSES and len(batch) > 1:
            # Resending the good half is harmless: same series and time overwrite.
            middle = len(batch) // 2
            self.send(batch[:middle])
            self.send(batch[middle:])
        elif answer.status in SPLIT_STATUSES:
            record_id, measurement, _ = batch[0]
            self._set_aside(Rejected(record_id, measurement, answer.message))
        else:
            raise _Stop(self._explain(answer))

    def _set_aside(self, rejected: Rejected) -> None:
        self.spool.set_aside(rejected)
        self.rejected.append(rejected)

    def _post(self, body: str) -> Answer:
        delay = FIRST_DELAY_S
        while True:
            answer = self.writer.write(body)
            left = self.deadline - time.monotonic()
            if answer.status not in RETRY_STATUSES or left <= 0:
                return answer
            self.sleep(min(left, delay * random.uniform(0.5, 1.0)))
            delay = min(delay * 2, MAX_DELAY_S)

    def _explain(self, answer: Answer) -> str:
        config = self.config
        where = f"InfluxDB at {config.url}"
        if answer.status == 0:
            return (
                f"{where} unreachable for {config.retry_total_s:g}s ({answer.message});"
                " results stay spooled: `fleet results push` sends them later"
            )
        if answer.status in (401, 403):
            fix = "check FLEET_INFLUX_TOKEN (or FLEET_INFLUX_USER and FLEET_INFLUX_PASSWORD)"
        elif answer.status == 404 and config.dialect == "v1":
            fix = (
                f'create the database (CREATE DATABASE "{config.database}")'
                " or set FLEET_INFLUX_DB to an existing one"
            )
        elif answer.status == 404:
            fix = "create the bucket or set FLEET_INFLUX_BUCKET and FLEET_INFLUX_ORG"
        else:
            fix = "results stay spooled: `fleet results push` sends them later"
        return f"{where} answered HTTP {answer.status}: {answer.message}; {fix}"


@contextmanager
def _writer(config: InfluxConfig) -> Iterator[Writer]:
    writer = V1Writer(config) if config.dialect == "v1" else V2Writer(config)
    try:
        yield writer
    finally:
        writer.close()


def _batches(spool: Spool, size: int) -> Iterator[list[tuple[int, str, str]]]:
    after = 0
    while rows := spool.pending(size, after):
        after = rows[-1][0]
        yield [(record_id, record.measurement, to_line(record)) for record_id, record in rows]


def push_pending(
    store: Store, config: InfluxConfig, sleep: Callable[[float], None] = time.sleep
) -> PushReport:
    """Send every record not yet sent to this InfluxDB; never raises for a server that is down.

    Lines for the next batch are built while the previous batch is on the wire.
    """
    spool = Spool(store, config.sink)
    errors: list[str] = []
    with _writer(config) as writer, ThreadPoolExecutor(max_workers=1) as pool:
        sender = _Sender(writer, spool, config, sleep)
        in_flight: Future[None] | None = None
        try:
            for batch in _batches(spool, config.batch_size):
                if in_flight is not None:
                    in_flight.result()
                in_flight = pool.submit(sender.send_batch, batch)
            if in_flight is not None:
                in_flight.result()
        except _Stop as stop:
            errors.append(str(stop))
    return PushReport(sender.sent, sender.rejected, spool.count_pending(), errors)
