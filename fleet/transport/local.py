"""The built-in `local` device: commands run as subprocesses of the controller."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from fleet.errors import DeviceError
from fleet.transport.base import Process, Transport


def _without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """The agent needs no database credentials: keep them out of its environment."""
    return {k: v for k, v in env.items() if not k.startswith("FLEET_INFLUX_")}


# How long a local agent told to stop (SIGTERM) has before it is killed (SIGKILL).
STOP_GRACE_S = 5.0


def _signal(proc: subprocess.Popen[bytes], number: signal.Signals) -> None:
    """Signal the command's process group (its own: it was started in a new session), unless
    the command has ended (its process group may be gone, or its number reused)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, number)


class LocalTransport(Transport):
    def _path(self, remote: str) -> Path:
        return Path(remote).expanduser()

    def run(self, argv: Sequence[str], stdin: bytes = b"") -> Process:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_without_secrets(os.environ),
            start_new_session=True,  # its own process group: stopping it stops its workers too
        )
        assert proc.stdin and proc.stdout and proc.stderr
        proc.stdin.write(stdin)
        proc.stdin.close()

        def kill() -> None:
            # As over SSH, where the agent finds its channel closed: told to stop, it stops
            # its workers and removes the run's outputs itself; killed if it has not in time.
            _signal(proc, signal.SIGTERM)
            timer = threading.Timer(STOP_GRACE_S, _signal, (proc, signal.SIGKILL))
            timer.daemon = True
            timer.start()

        return Process(self.device.name, argv, proc.stdout, proc.stderr, proc.wait, kill)

    def exists(self, remote: str) -> bool:
        return self._path(remote).exists()

    def makedirs(self, remote: str) -> None:
        with self._device_errors(f"making the folder {remote}"):
            self._path(remote).mkdir(parents=True, exist_ok=True)

    def put(self, local: Path, remote: str, sent: Callable[[int, int], None] | None = None) -> None:
        target = self._path(remote)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with self._device_errors(f"copying {local.name} to {remote}"):
            try:
                shutil.copyfile(local, tmp)  # a local copy is quick: said once, when done
                tmp.replace(target)
                if sent is not None:
                    size = target.stat().st_size
                    sent(size, size)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise

    @contextlib.contextmanager
    def _device_errors(self, what: str) -> Iterator[None]:
        """A file that cannot be written is the device's problem: one line, with its kind."""
        try:
            yield
        except OSError as exc:
            full = exc.errno == errno.ENOSPC
            message = f"no space left on the device: {what}" if full else f"{what} failed: {exc}"
            raise DeviceError(self.device.name, message, "disk_full" if full else "error") from exc

    def get(self, remote: str, local: Path) -> None:
        shutil.copyfile(self._path(remote), local)
