"""The InfluxDB sink: sends spooled records in batches, retries a server that is down.

Two dialects share everything but the last step: `v1` POSTs line protocol to `/write`
(InfluxDB 1.x, 2.x's v1 API, 3.x); `v2` hands the same lines to influxdb-client's write API
(2.x, 3.x). Points are built with `influxdb_client.Point` at millisecond precision, so a
record always becomes the same series and timestamp: sending it twice overwrites, never
duplicates. Records leave the spool only when the server accepted them (HTTP 2xx) or
refused them for good (HTTP 400, bisected down to the single bad line).

A push is a pipeline of two threads: this one reads the next batch of stored lines and
compresses it while a sender thread has the previous one on the wire; the sender only talks
to the server, and what it reports is written to the spool here.
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
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from fleet.config import InfluxConfig
from fleet.results.lineprotocol import PRECISION
from fleet.results.spool import Pending, Rejected, Spool
from fleet.results.store import Store

# HTTP statuses worth waiting for: the server is starting, overloaded or behind a proxy that is.
# 0 stands for "no answer at all" (refused, reset, timed out).
RETRY_STATUSES = frozenset({0, 408, 429, 500, 502, 503, 504})
# A batch answered with one of these is split in halves until the bad line is alone.
SPLIT_STATUSES = frozenset({400, 413})
FIRST_DELAY_S = 0.25
MAX_DELAY_S = 8.0


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


@dataclass(frozen=True)
class Answer:
    status: int  # HTTP status; 0 when no answer came
    message: str


class Writer(Protocol):
    def payload(self, lines: Sequence[str]) -> bytes: ...

    def write(self, payload: bytes) -> Answer: ...


class V1Writer:
    """POST /write with db, rp and precision=ms; gzip unless turned off (lines shrink 4-6x)."""

    def __init__(self, config: InfluxConfig) -> None:
        params = {"db": config.database, "precision": "ms"}
        if config.retention_policy:
            params["rp"] = config.retention_policy
        self.url = f"{config.url}/write?{urlencode(params)}"
        self.gzip = config.gzip
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        if config.gzip:
            self.headers["Content-Encoding"] = "gzip"
        if config.token:
            self.headers["Authorization"] = f"Token {config.token.reveal()}"
        elif config.user:
            password = config.password.reveal() if config.password else ""
            self.headers.update(urllib3.make_headers(basic_auth=f"{config.user}:{password}"))
        self.http = urllib3.PoolManager(
            timeout=urllib3.Timeout(total=config.timeout_s), retries=False
        )

    def payload(self, lines: Sequence[str]) -> bytes:
        body = "\n".join(lines).encode()
        return gzip.compress(body, 1) if self.gzip else body

    def write(self, payload: bytes) -> Answer:
        try:
            response = self.http.request("POST", self.url, body=payload, headers=self.headers)
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
            enable_gzip=config.gzip,
        )
        self.api = self.client.write_api(write_options=SYNCHRONOUS)
        self.bucket, self.org = config.bucket, config.org

    def payload(self, lines: Sequence[str]) -> bytes:
        return "\n".join(lines).encode()  # the client gzips it

    def write(self, payload: bytes) -> Answer:
        try:
            self.api.write(self.bucket, self.org, payload, PRECISION)
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


NO_FIELD = "no field with a finite value"


@dataclass
class _Delivery:
    """What became of a batch: the caller records it in the spool (the sender never does)."""

    sent: list[Pending] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    stop: str = ""  # why the push cannot go on now; empty while it can
    span: tuple[int, int] | None = None  # the batch's span (see Spool.settle), if all delivered


class _Sender:
    """Delivers batches: retries while the push's time budget lasts, bisects refused batches."""

    def __init__(
        self, writer: Writer, config: InfluxConfig, sleep: Callable[[float], None]
    ) -> None:
        self.writer, self.config, self.sleep = writer, config, sleep
        self.deadline = time.monotonic() + config.retry_total_s

    def deliver(self, batch: Sequence[Pending], payload: bytes, span: tuple[int, int]) -> _Delivery:
        """`payload` is the writer's payload of `batch`, built while the last batch was sent."""
        delivery = _Delivery()
        self._send(batch, payload, delivery)
        delivery.span = None if delivery.stop else span
        return delivery

    def _send(self, batch: Sequence[Pending], payload: bytes, delivery: _Delivery) -> None:
        if not batch:
            return
        if delivery.stop:  # the rest stays pending
            return
        answer = self._post(payload)
        if 200 <= answer.status < 300:
            delivery.sent.extend(batch)
        elif answer.status in SPLIT_STATUSES and len(batch) > 1:
            # Resending the good half is harmless: same series and time overwrite.
            middle = len(batch) // 2
            for half in (batch[:middle], batch[middle:]):
                self._send(half, self.writer.payload([p.line for p in half]), delivery)
        elif answer.status in SPLIT_STATUSES:
            delivery.rejected.append(
                Rejected(batch[0].record_id, batch[0].measurement, answer.message)
            )
        else:
            delivery.stop = self._explain(answer)

    def _post(self, payload: bytes) -> Answer:
        delay = FIRST_DELAY_S
        while True:
            answer = self.writer.write(payload)
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


class _Push:
    """The push's tally, kept in the spool by the thread that reads it."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.sent = 0
        self.rejected: list[Rejected] = []
        self.stop = ""

    def take(self, delivery: _Delivery) -> None:
        if delivery.sent or delivery.rejected or delivery.span:
            self.spool.settle(delivery.sent, delivery.rejected, delivery.span)
        self.sent += len(delivery.sent)
        self.rejected += delivery.rejected
        self.stop = self.stop or delivery.stop

    def writable(self, batch: Sequence[Pending]) -> list[Pending]:
        """The batch without records that have nothing to write; those are set aside."""
        empty = [Rejected(p.record_id, p.measurement, NO_FIELD) for p in batch if not p.line]
        if empty:  # Point writes nothing when no field has a (finite) value
            self.take(_Delivery(rejected=empty))
        return [p for p in batch if p.line]


@contextmanager
def _writer(config: InfluxConfig) -> Iterator[Writer]:
    writer = V1Writer(config) if config.dialect == "v1" else V2Writer(config)
    try:
        yield writer
    finally:
        writer.close()


def _batches(spool: Spool, size: int) -> Iterator[tuple[int, list[Pending]]]:
    """(after, batch): the pending records above `after`, `size` at a time."""
    after = 0
    while batch := spool.pending(size, after):
        yield after, batch
        after = batch[-1].record_id


def push_pending(
    store: Store, config: InfluxConfig, sleep: Callable[[float], None] = time.sleep
) -> PushReport:
    """Send every record not yet sent to this InfluxDB; never raises for a server that is down.

    The next batch is read and compressed while the previous one is on the wire. What a push
    that stops early leaves pending is sent by the next one.
    """
    spool = Spool(store, config.sink)
    push = _Push(spool)
    with _writer(config) as writer, ThreadPoolExecutor(max_workers=1) as pool:
        sender = _Sender(writer, config, sleep)
        in_flight: Future[_Delivery] | None = None
        for after, pending in _batches(spool, config.batch_size):
            span = (after, pending[-1].record_id)
            batch = push.writable(pending)
            payload = writer.payload([p.line for p in batch])
            done = in_flight.result() if in_flight is not None else _Delivery()
            in_flight = None
            if not done.stop:
                # The next batch goes on the wire before the last one is recorded in the spool.
                in_flight = pool.submit(sender.deliver, batch, payload, span)
            push.take(done)
            if done.stop:
                break
        if in_flight is not None:
            push.take(in_flight.result())
    return PushReport(
        push.sent, push.rejected, spool.count_pending(), [push.stop] if push.stop else []
    )
