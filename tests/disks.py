"""Real small file systems for tests: one to fill up (a 2 MiB tmpfs as root, else a loop-mounted
ext2 image) and a read-only view of a folder (a read-only bind mount). Where this machine
cannot mount them (not root, no loop device), the test is skipped with the reason."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


class Disk:
    """A small mounted file system that a test can fill up and free again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ballast = root / "ballast"

    def fill(self) -> None:
        """Write until the file system refuses even one byte more."""
        with self.ballast.open("ab", buffering=0) as handle:
            for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
                with pytest.raises(OSError, match="No space left") as full:  # noqa: PT012
                    while True:
                        handle.write(b"\xa5" * chunk)
                assert full.value.errno == errno.ENOSPC
        assert os.statvfs(self.root).f_bavail == 0

    def free(self) -> None:
        self.ballast.unlink()


def _fails(argv: list[str]) -> str | None:
    """None when the command succeeds, else why not."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        return f"{argv[0]}: {exc}"
    return None if done.returncode == 0 else f"{argv[0]}: {done.stderr.strip() or done.returncode}"


def _mount(target: Path, image: Path) -> str | None:
    """Mount a 2 MiB tmpfs on target, else a 4 MiB ext2 loop file; None, or why neither."""
    why = _fails(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(target)])
    if why is None:
        return None
    with image.open("wb") as handle:
        handle.truncate(4 << 20)
    loop = _fails(["mkfs.ext2", "-q", "-F", str(image)]) or _fails(
        ["mount", "-o", "loop", str(image), str(target)]
    )
    return None if loop is None else f"tmpfs ({why}), loop file ({loop})"


@contextlib.contextmanager
def small_disk(target: Path, image: Path) -> Iterator[Disk]:
    """A small file system mounted on `target` (an empty folder) while the block runs;
    `image` is where a loop file may go (not under `target`)."""
    why = _mount(target, image)
    if why is not None:
        pytest.skip(f"needs a small file system to fill, and mounting one failed: {why}")
    try:
        yield Disk(target)
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


@contextlib.contextmanager
def read_only(target: Path) -> Iterator[Path]:
    """`target` mounted read-only over itself while the block runs: even root cannot write
    there (a chmod would not stop root, and the lab's devices log in as whoever runs it)."""
    why = _fails(["mount", "--bind", str(target), str(target)])
    if why is not None:
        pytest.skip(f"needs a read-only bind mount, and mounting failed: {why}")
    try:
        why = _fails(["mount", "-o", "remount,bind,ro", str(target)])
        if why is not None:
            pytest.skip(f"needs a read-only bind mount, and remounting read-only failed: {why}")
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)
