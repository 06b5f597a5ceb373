"""The built-in `local` device: commands run as subprocesses of the controller."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from fleet.transport.base import Process, Transport


class LocalTransport(Transport):
    def _path(self, remote: str) -> Path:
        return Path(remote).expanduser()

    def run(self, argv: Sequence[str], stdin: bytes = b"") -> Process:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdin and proc.stdout and proc.stderr
        proc.stdin.write(stdin)
        proc.stdin.close()
        return Process(self.device.name, argv, proc.stdout, proc.stderr, proc.wait, proc.kill)

    def exists(self, remote: str) -> bool:
        return self._path(remote).exists()

    def put(self, local: Path, remote: str) -> None:
        target = self._path(remote)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(local, tmp)
        tmp.replace(target)

    def get(self, remote: str, local: Path) -> None:
        shutil.copyfile(self._path(remote), local)
