"""Results stream to InfluxDB while a run goes on, so a long nightly shows up as it runs.

`streaming(store, config)` wraps a run: a sender thread pushes what the store holds unsent
every `stream_interval_s` (fleet.toml, 3 s by default), through the same spool as every push
(`fleet.results.influx.push_pending`), so nothing is sent twice and an outage loses nothing:
what was not sent stays pending. After the run, `Stream.push_rest()` sends only what is left,
with the push's full retry budget, and reports for the whole run.

The thread never holds the run up. The device threads write the store while it reads: both go
through the store's one connection and its lock (`Store.lock`, held for one statement or one
transaction at a time), so a record is only read once committed. A background push retries a
server that is down for at most a second, and while InfluxDB is down or refuses writes the
thread waits longer and longer between tries (doubling up to MAX_BACKOFF_S), saying so once
when streaming stops and once when it resumes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from fleet.config import InfluxConfig

# Imported here, by the thread that starts the run, never first by the sender thread: two
# threads importing influxdb_client at once can deadlock on its circular imports (a device
# thread imports it for its first record's line of line protocol).
from fleet.results.influx import PushReport, push_pending
from fleet.results.spool import Rejected, Spool
from fleet.results.store import Store

# The longest wait between two background pushes while InfluxDB does not take them.
MAX_BACKOFF_S = 60.0
# A background push gives a server that is down this long; the next try comes with a later tick.
BACKGROUND_RETRY_S = 1.0
# A run stopped by Ctrl-C or SIGTERM waits this long at most for a push in flight.
STOP_WAIT_S = 2.0
# How a push that met a server that is down ends its message (fleet.results.influx).
LATER = "; results stay spooled: `fleet results push` sends them later"


def _quiet(line: str) -> None:
    """The default `say`: nothing."""


class Stream:
    """The background sender of one run; inert without an InfluxDB (`config` None)."""

    def __init__(
        self,
        store: Store,
        config: InfluxConfig | None,
        *,
        say: Callable[[str], None] = _quiet,
        interval_s: float | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.say = say
        self.interval_s = interval_s or (config.stream_interval_s if config else 0.0)
        self.sent = 0  # records InfluxDB accepted from the background pushes
        self.rejected: list[Rejected] = []  # records it refused for good (HTTP 400)
        self.failure = ""  # why the last background push stopped early; empty when it did not
        self._stop = threading.Event()
        self._busy = threading.Lock()  # one push at a time: the thread's, or the last one
        self._thread: threading.Thread | None = None
        self._spool: Spool | None = None

    def start(self) -> None:
        if self.config is None or self._thread is not None:
            return
        self._spool = Spool(self.store, self.config.sink)
        self._thread = threading.Thread(target=self._loop, name="fleet-stream", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop the thread, waiting for a push in flight (at most `timeout_s`, if given)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        delay = self.interval_s
        while not self._stop.wait(delay):
            if self.push_once():
                delay = self.interval_s
            else:  # down or refusing: back off, the run does not wait for it
                delay = min(delay * 2, max(MAX_BACKOFF_S, self.interval_s))

    def push_once(self) -> bool:
        """Send what is pending now; False when InfluxDB did not take all of it (the rest stays
        pending for the next try). Never raises: the push after the run meets any error again."""
        if self.config is None or self._spool is None:
            return True
        background = replace(
            self.config, retry_total_s=min(self.config.retry_total_s, BACKGROUND_RETRY_S)
        )
        with self._busy:
            try:
                if not self._spool.pending(1):
                    return True
                report = push_pending(self.store, background)
            except Exception as exc:  # the store busy or full: the run goes on regardless
                problem = f"{type(exc).__name__}: {exc}"
            else:
                self.sent += report.sent
                self.rejected += report.rejected
                problem = report.errors[0] if report.errors else ""
        if problem and not self.failure:
            reason = problem.removesuffix(LATER)  # true, but the next words say better
            self.say(
                f"InfluxDB: streaming paused ({reason}); the run goes on and its results wait"
                f" in the store: tried again every {self.interval_s:g} to"
                f" {max(MAX_BACKOFF_S, self.interval_s):g} s, and at the end of the run"
            )
        elif not problem and self.failure:
            self.say(f"InfluxDB: streaming resumed ({self.sent} record(s) sent during the run)")
        self.failure = problem
        return not problem

    def push_rest(self) -> PushReport | None:
        """After the run: stop the thread, send what is left with the full retry budget, and
        report for the whole run (what the thread sent counts); None without an InfluxDB."""
        if self.config is None:
            return None
        self.stop()
        with self._busy:
            last = push_pending(self.store, self.config)
        return PushReport(
            self.sent + last.sent, [*self.rejected, *last.rejected], last.pending, last.errors
        )


@contextmanager
def streaming(
    store: Store,
    config: InfluxConfig | None,
    *,
    say: Callable[[str], None] = _quiet,
    interval_s: float | None = None,
) -> Iterator[Stream]:
    """Send the store's pending records to InfluxDB every `interval_s` (default: the config's
    `stream_interval_s`) while the block runs; nothing happens without an InfluxDB. On leaving,
    the thread stops; `push_rest()` then sends what is left."""
    stream = Stream(store, config, say=say, interval_s=interval_s)
    stream.start()
    try:
        yield stream
    except BaseException:
        stream.stop(STOP_WAIT_S)  # stopped by a signal: do not wait out a slow server
        raise
    stream.stop()
