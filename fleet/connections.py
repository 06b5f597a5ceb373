"""One open connection per device, kept from one run to the next.

`fleet run` makes one run, and each device's connection lasts that run. The pytest plugin
makes a run per test: a session's `Connections` keeps each device's connection open between
its tests, so that a worker logs in to a device once (docs/pytest.md), not once per test.
"""

from __future__ import annotations

import threading

from fleet.inventory import Device
from fleet.transport import Transport, connect


class Connections:
    """Each device's transport, opened on first use. With `keep`, a device's connection
    outlives its run, until dropped or closed; without, it ends with the run on the device."""

    def __init__(self, *, keep: bool = False) -> None:
        self.keep = keep
        self._open: dict[str, Transport] = {}
        self._lock = threading.Lock()  # the devices of a run connect from their own threads
        self.opened = 0  # connections made, for the session's summary and its tests

    def open(self, device: Device) -> Transport:
        """The device's connection: the one kept, while it stands, else a new one."""
        with self._lock:
            kept = self._open.pop(device.name, None)
        if kept is not None and kept.alive():
            transport, fresh = kept, False
        else:
            if kept is not None:
                kept.close()
            transport, fresh = connect(device), True  # unlocked: a slow device delays no other
        with self._lock:
            self._open[device.name] = transport
            self.opened += fresh
        return transport

    def release(self, device: Device) -> None:
        """The device's run is over: keep its connection for the next run, or close it."""
        if not self.keep:
            self.drop(device)

    def drop(self, device: Device) -> None:
        """Close the device's connection: the next `open` makes a new one."""
        with self._lock:
            transport = self._open.pop(device.name, None)
        if transport is not None:
            transport.close()

    def close(self) -> None:
        with self._lock:
            transports, self._open = list(self._open.values()), {}
        for transport in transports:
            transport.close()
