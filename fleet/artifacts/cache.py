"""The artifact cache: converted files named by their sha256, and an index of requests.

Layout under the root:
    <sha256>.<onnx|tflite>    the artifact itself, never changed once written
    <sha256>.json             its sidecar: what made it and its model card
    requests/<key>.json       request key -> artifact sha256 (key hashes source sha256,
                              variant, converter and version, options, calibration sha256)
    locks/<key>.lock          held while a request converts, so two processes never both do
Every write goes to a temporary file first and is renamed into place, so readers never see a
half-written file and a crash leaves nothing that looks valid.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet import paths
from fleet.errors import ConfigError


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def request_key(request: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes, released when the block ends (or the process dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class CacheStats:
    """Requests this cache object answered by running a converter, and from the cache
    (onnx:fp32, the source itself, counts as neither)."""

    hits: int = 0
    conversions: int = 0


class ArtifactCache:
    """Converted files by content, and which request made which (see the module's layout)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else paths.cache_dir() / "artifacts"
        self.stats = CacheStats()

    def lookup(self, key: str) -> Path | None:
        """The artifact a request made before, or None; a dangling entry counts as a miss."""
        try:
            entry = json.loads((self.root / "requests" / f"{key}.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        path = self.root / str(entry.get("artifact", ""))
        if not path.is_file() or not (self.root / f"{path.stem}.json").is_file():
            return None
        return path

    def add(self, key: str, file: Path, sidecar: Mapping[str, Any]) -> Path:
        """Store a copy of `file` under its sha256 with its sidecar; remember the request."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".add-", suffix=file.suffix)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            shutil.copyfile(file, tmp)
            sha = sha256_file(tmp)  # of the copy: the name always matches the stored bytes
            path = self.root / f"{sha}{file.suffix}"
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        self.write_sidecar(path, {**sidecar, "sha256": sha})
        record = {"artifact": path.name, "request": dict(sidecar.get("request", {}))}
        write_atomic(self.root / "requests" / f"{key}.json", json.dumps(record).encode())
        return path

    def sidecar(self, path: Path) -> dict[str, Any]:
        sidecar_path = path.with_suffix(".json")
        try:
            data = json.loads(sidecar_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"{sidecar_path}: unreadable artifact sidecar ({exc}); delete {path.name} and"
                " its .json to convert again"
            ) from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{sidecar_path}: artifact sidecar is not a JSON object")
        return data

    def write_sidecar(self, path: Path, sidecar: Mapping[str, Any]) -> None:
        data = json.dumps(sidecar, indent=2).encode()
        write_atomic(path.with_suffix(".json"), data)

    def lock(self, key: str) -> contextlib.AbstractContextManager[None]:
        return file_lock(self.root / "locks" / f"{key}.lock")

    def scratch(self) -> tempfile.TemporaryDirectory[str]:
        """A work folder on the cache's own file system (so results rename into place)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(dir=self.root, prefix=".work-")
