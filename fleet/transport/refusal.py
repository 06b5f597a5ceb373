"""Why an SFTP operation failed while the connection still stands: the device said no.

SFTP version 3, what OpenSSH speaks, has status codes for a missing file and a denied
permission only: a full disk and a read-only file system both come back as a bare
"Failure". Taken for a broken connection, they were retried as one and then reported as
"Failure" with no path; asked about (OpenSSH's statvfs@openssh.com, no command run on the
device), they are what they are: no space left (`disk_full`) or a read-only file system.
"""

from __future__ import annotations

import errno
import posixpath
from dataclasses import dataclass
from typing import Any

import paramiko
from paramiko.sftp import CMD_EXTENDED, CMD_EXTENDED_REPLY

from fleet.errors import DeviceError

# statvfs@openssh.com's flag for a file system mounted read-only (OpenSSH's PROTOCOL file).
_ST_RDONLY = 0x1
_FULL = (errno.ENOSPC, errno.EDQUOT)
# What the device's own file system answers (SFTP status codes become these, or no errno).
_ANSWERS = {errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EROFS, *_FULL}


@dataclass(frozen=True)
class Space:
    """The file system holding a folder: what is free to this user, and whether it is
    mounted read-only."""

    folder: str
    free_bytes: int
    out_of_inodes: bool  # no file can be made, whatever the bytes free
    read_only: bool


def space(sftp: paramiko.SFTPClient, path: str) -> Space | None:
    """The file system of `path` (or of its nearest folder that exists); None where the
    server does not answer statvfs@openssh.com."""
    request: Any = sftp._request  # type: ignore[attr-defined]  # paramiko has no statvfs
    folder = path
    while True:
        try:
            kind, message = request(CMD_EXTENDED, "statvfs@openssh.com", folder)
        except OSError as exc:
            parent = posixpath.dirname(folder)
            if exc.errno == errno.ENOENT and parent != folder:
                folder = parent
                continue
            return None
        except (EOFError, paramiko.SSHException):
            return None
        break
    if kind != CMD_EXTENDED_REPLY:
        return None
    # f_bsize f_frsize f_blocks f_bfree f_bavail f_files f_ffree f_favail f_fsid f_flag ...
    _bsize, frsize, _blocks, _bfree, bavail, files, _ffree, favail, _fsid, flag = (
        message.get_int64() for _ in range(10)
    )
    # Some file systems (btrfs) count no inodes at all: f_files 0 is no limit.
    return Space(folder, bavail * frsize, files > 0 and favail == 0, bool(flag & _ST_RDONLY))


def answered(exc: BaseException) -> bool:
    """Whether the exception is the device's file system saying no (an SFTP status), not a
    connection failing: an OSError with no errno ("Failure") or a file system's errno."""
    if not isinstance(exc, OSError) or isinstance(exc, TimeoutError):
        return False
    return exc.errno is None or exc.errno in _ANSWERS


def refusal(
    device: str,
    what: str,
    exc: OSError,
    sftp: paramiko.SFTPClient | None,
    path: str,
    needed: int = 1,
) -> DeviceError:
    """The DeviceError for a refusal of `what` on `path`: `disk_full` when the disk has less
    than `needed` bytes (or no inode) free, "read-only file system" when it is mounted so,
    else the device's own words. None of them is worth trying again."""
    found = space(sftp, path) if sftp is not None else None
    if exc.errno == errno.EROFS or (found and found.read_only):
        folder = found.folder if found else path
        return DeviceError(device, f"{what} failed: read-only file system ({folder})")
    if exc.errno in _FULL or (found and (found.free_bytes < needed or found.out_of_inodes)):
        where = f" ({found.free_bytes} bytes free in {found.folder})" if found else ""
        return DeviceError(device, f"no space left on the device: {what}{where}", "disk_full")
    return DeviceError(device, f"{what} failed: {exc.strerror or exc or type(exc).__name__}")
