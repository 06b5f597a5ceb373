"""The transport interface: run an argv and stream its output, put and check files."""

from __future__ import annotations

import collections
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from fleet.errors import DeviceError
from fleet.inventory import Device

_EOF = object()


class Process:
    """A running command: stdout lines as they come, the tail of stderr, the exit code."""

    def __init__(
        self,
        device: str,
        argv: Sequence[str],
        stdout: Iterable[bytes],
        stderr: Iterable[bytes],
        wait: Callable[[], int],
        kill: Callable[[], None],
    ) -> None:
        self.device = device
        self.argv = list(argv)
        self._wait = wait
        self.kill = kill  # stops the command (on SSH: closes its channel)
        self._lines: queue.Queue[object] = queue.Queue()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        threading.Thread(target=self._pump, args=(stdout,), daemon=True).start()
        self._stderr_done = threading.Thread(target=self._drain, args=(stderr,), daemon=True)
        self._stderr_done.start()

    def _pump(self, stream: Iterable[bytes]) -> None:
        try:
            for raw in stream:
                self._lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        finally:
            self._lines.put(_EOF)

    def _drain(self, stream: Iterable[bytes]) -> None:
        # Read stderr continuously: a full pipe or SSH window would stall the command.
        for raw in stream:
            self.stderr_tail.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def lines(self, idle_timeout: float) -> Iterator[str]:
        """Stdout lines until EOF; a silence longer than idle_timeout kills the command."""
        while True:
            try:
                item = self._lines.get(timeout=idle_timeout)
            except queue.Empty:
                self.kill()
                raise DeviceError(
                    self.device,
                    f"no output for {idle_timeout:g} s from {self.argv[0]}; stopped it",
                    "timeout",
                ) from None
            if item is _EOF:
                return
            yield str(item)

    def wait(self) -> int:
        code = self._wait()
        self._stderr_done.join(timeout=5)
        return code

    def stderr_text(self, lines: int = 5) -> str:
        return " | ".join(list(self.stderr_tail)[-lines:])


class Transport(ABC):
    """One device's connection. Commands are argv lists; quoting happens only in SSH."""

    def __init__(self, device: Device) -> None:
        self.device = device

    @abstractmethod
    def run(self, argv: Sequence[str], stdin: bytes = b"") -> Process: ...

    @abstractmethod
    def exists(self, remote: str) -> bool: ...

    @abstractmethod
    def makedirs(self, remote: str) -> None:
        """Make the folder and its parents where missing (mkdir -p), running no command."""

    @abstractmethod
    def put(self, local: Path, remote: str, sent: Callable[[int, int], None] | None = None) -> None:
        """Copy a file so that `remote` appears complete or not at all; `sent(bytes so far,
        size)` is told along the way (a progress bar for a large model)."""

    @abstractmethod
    def get(self, remote: str, local: Path) -> None: ...

    def alive(self) -> bool:
        """Whether the connection to the device still stands."""
        return True

    def close(self) -> None:  # noqa: B027 - most transports hold nothing to release
        pass

    def check(self, argv: Sequence[str]) -> str:
        """Run a short command; its stdout, or a DeviceError with the stderr tail."""
        proc = self.run(argv)
        out = "\n".join(proc.lines(idle_timeout=120))
        code = proc.wait()
        if code != 0:
            raise DeviceError(
                self.device.name, f"{argv[0]} exited with {code}: {proc.stderr_text()}"
            )
        return out
