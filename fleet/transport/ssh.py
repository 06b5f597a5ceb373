"""SSH devices through paramiko: commands, streams and files over a connection that
fleet/transport/sshlogin.py logs in (ssh config, jump hosts, strict host keys)."""

from __future__ import annotations

import contextlib
import os
import posixpath
import shlex
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import paramiko

from fleet.errors import DeviceError
from fleet.inventory import Device
from fleet.transport.base import Process, Transport
from fleet.transport.refusal import answered, refusal
from fleet.transport.sshconfig import device_hop
from fleet.transport.sshlogin import CONNECT_TIMEOUT_S, login


def _close(channel: paramiko.Channel) -> None:
    """Stop a command by closing its channel. paramiko marks the channel closed before it
    sends the close, so the thread reading it can see the end, close the whole connection and
    leave the send failing: the command is stopped either way (sshd ends a session whose
    channel or connection is gone)."""
    with contextlib.suppress(EOFError, OSError, paramiko.SSHException):
        channel.close()


class SSHTransport(Transport):
    def __init__(self, device: Device) -> None:
        super().__init__(device)
        self.route = login(device_hop(device))  # through its jump hosts, if any
        self.client = self.route.client
        self._sftp: paramiko.SFTPClient | None = None
        self._dropped = False  # a command's channel was closed by the connection ending

    @contextlib.contextmanager
    def _device_errors(self, what: str, path: str = "", needed: int = 1) -> Iterator[None]:
        """A connection that breaks, or a file the device will not write, is the device's
        problem, not a bug in fleet: one line naming the device, the operation and (for a
        refusal) why, with the kind that says whether trying again can help."""
        try:
            yield
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if isinstance(exc, OSError) and answered(exc) and self.alive():
                # The device answered, so the connection stands: its file system said no.
                sftp = self._sftp if path else None
                raise refusal(self.device.name, what, exc, sftp, path, needed) from exc
            message = f"{what} failed: {exc or type(exc).__name__}"
            raise DeviceError(self.device.name, message, "connection_lost") from exc

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            with self._device_errors("opening SFTP (is the sftp subsystem on?)"):
                self._sftp = self.client.open_sftp()
        return self._sftp

    def run(self, argv: Sequence[str], stdin: bytes = b"") -> Process:
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise DeviceError(self.device.name, "SSH connection closed", "connection_lost")
        with self._device_errors(f"running {argv[0]}"):
            try:
                channel = transport.open_session(timeout=CONNECT_TIMEOUT_S)
            except paramiko.SSHException:
                # paramiko's "No existing session": the device stopped answering.
                raise DeviceError(
                    self.device.name,
                    f"no SSH session within {CONNECT_TIMEOUT_S:g} s: the device stopped answering",
                    "timeout",
                ) from None
            channel.exec_command(shlex.join(argv))  # the one place argv becomes a shell string
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
        stopped = threading.Event()

        def wait() -> int:
            code = channel.recv_exit_status()
            # sshd ends every command it ran, however it ended, with an EOF (then its exit
            # status, or the signal, which paramiko reads as -1). A channel closed without
            # one, and not by us, was closed by its connection ending, which paramiko says
            # (is_active) only a moment later: an agent then looked killed, not cut off.
            if code == -1 and not channel.eof_received and not stopped.is_set():
                self._dropped = True
            return code

        def stop() -> None:
            stopped.set()
            _close(channel)

        return Process(
            self.device.name,
            argv,
            channel.makefile("rb"),
            channel.makefile_stderr("rb"),
            wait,
            stop,
        )

    def exists(self, remote: str) -> bool:
        with self._device_errors(f"checking {remote}", remote):
            try:
                self.sftp.stat(remote)
            except FileNotFoundError:
                return False
        return True

    def makedirs(self, remote: str) -> None:
        with self._device_errors(f"making the folder {remote}", remote):
            self._makedirs(remote.rstrip("/") or "/")

    def _makedirs(self, remote: str) -> None:
        """mkdir -p over SFTP: no command, so no login shell, on the device."""
        try:
            self.sftp.stat(remote)
            return
        except FileNotFoundError:
            pass
        parent = posixpath.dirname(remote)
        if parent and parent != remote:
            self._makedirs(parent)
        try:
            self.sftp.mkdir(remote)
        except OSError:
            with contextlib.suppress(OSError):  # made meanwhile by another controller
                if stat.S_ISDIR(self.sftp.stat(remote).st_mode or 0):
                    return
            raise

    def put(self, local: Path, remote: str, sent: Callable[[int, int], None] | None = None) -> None:
        tmp = f"{remote}.{os.getpid()}.{threading.get_ident()}.tmp"
        what = f"sending {local.name} to {remote}"
        with self._device_errors(what, posixpath.dirname(remote), local.stat().st_size):
            try:
                self.sftp.put(str(local), tmp, callback=sent)  # paramiko checks the size
                self.sftp.posix_rename(tmp, remote)
            except BaseException:
                with contextlib.suppress(OSError, paramiko.SSHException):
                    self.sftp.remove(tmp)
                raise

    def get(self, remote: str, local: Path) -> None:
        with self._device_errors(f"fetching {remote}", remote):
            self.sftp.get(remote, str(local))

    def alive(self) -> bool:
        transport = self.client.get_transport()
        return not self._dropped and transport is not None and transport.is_active()

    def close(self) -> None:
        self.route.close()
