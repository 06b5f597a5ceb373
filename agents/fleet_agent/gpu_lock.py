"""One run at a time on each GPU of a host.

A server with several GPUs is several inventory devices (``fleet_gpu: N`` each), each with
its own agent and work folder, so the device lock (``agent.lock`` in the work folder) does not
keep two of them off one GPU. This lock does: a file per GPU in a folder every user of the
host shares, held (``flock``) for the whole job. A GPU another run holds makes the agent stop
with ``busy``, naming that run, and the controller waits as it waits for a busy device.
"""

import contextlib
import errno
import fcntl
import os
from typing import IO, List, Optional

# Module-level so that tests can keep their locks apart from a real run's.
LOCK_DIR = "/tmp"  # noqa: S108 - shared by every user of the host, by design


def lock_path(gpu: int) -> str:
    """``gpu``: nvidia-smi's index (fleet_gpu), never a CUDA ordinal, which
    CUDA_VISIBLE_DEVICES changes from one agent to the next (gpu_index.py)."""
    return os.path.join(LOCK_DIR, "fleet-gpu{}.lock".format(gpu))


def _open(path: str) -> IO[str]:
    """The lock file, made readable and writable by every user (the next run on this GPU may
    be another user's); opened read-only where another user made it without that."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        return open(path)  # flock needs no write access; the holder just cannot be named
    with contextlib.suppress(OSError):  # the umask took bits away; not ours to fix: fine
        os.fchmod(fd, 0o666)
    return os.fdopen(fd, "r+")


class GpuLocks:
    """The locks of a job's GPUs, held until ``release``."""

    def __init__(self) -> None:
        self._held: List[IO[str]] = []

    def acquire(self, gpus: List[int], holder: str) -> Optional[str]:
        """Lock each GPU (in order, so two jobs never wait on each other crosswise); None
        when all are held, else the message that names the run holding one (and none is
        kept)."""
        for gpu in sorted(set(gpus)):
            path = lock_path(gpu)
            try:
                lock = _open(path)
            except OSError as exc:
                self.release()
                return "cannot open the lock of GPU {} ({}): {}".format(gpu, path, exc.strerror)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                lock.seek(0)
                other = lock.read().strip() or "another fleet run"
                lock.close()
                self.release()
                return "GPU {} busy: held by {}".format(gpu, other)
            self._held.append(lock)
            if lock.writable():
                with contextlib.suppress(OSError):  # a full /tmp: the flock alone is the lock
                    lock.seek(0)
                    lock.truncate()
                    lock.write(holder)
                    lock.flush()
        return None

    def release(self) -> None:
        """Closing the files releases the locks (as the kernel does when the agent dies)."""
        for lock in self._held:
            lock.close()
        self._held = []
