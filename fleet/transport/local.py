"""The built-in `local` device: commands run as subprocesses of the controller."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from fleet.transport.base import Process, Transport


def _without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """The agent needs no database credentials: keep them out of its environment."""
    return {k: v for k, v in env.items() if not k.startswith("FLEET_INFLUX_")}


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
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        return Process(self.device.name, argv, proc.stdout, proc.stderr, proc.wait, kill)

    def exists(self, remote: str) -> bool:
        return self._path(remote).exists()

    def put(self, local: Path, remote: str) -> None:
        target = self._path(remote)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(local, tmp)
        tmp.replace(target)

    def get(self, remote: str, local: Path) -> None:
        shutil.copyfile(self._path(remote), local)
