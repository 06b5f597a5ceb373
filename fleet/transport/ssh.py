"""SSH devices through paramiko, with strict host-key checking and ~/.ssh/config."""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paramiko

from fleet.errors import DeviceError, HostKeyError
from fleet.inventory import Device
from fleet.transport.base import Process, Transport

CONNECT_TIMEOUT_S = 10.0


def _known_hosts(device: Device) -> Path:
    return device.known_hosts or Path("~/.ssh/known_hosts").expanduser()


def _ssh_config(host: str) -> dict[str, Any]:
    path = Path("~/.ssh/config").expanduser()
    if not path.exists():
        return {}
    return dict(paramiko.SSHConfig.from_path(str(path)).lookup(host))


def _fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's way of showing a key: SHA256:base64 without padding."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _key_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class SSHTransport(Transport):
    def __init__(self, device: Device) -> None:
        super().__init__(device)
        config = _ssh_config(device.host)
        self.hostname = str(config.get("hostname", device.host))
        # The inventory wins over ~/.ssh/config, as in Ansible; port 22 means "not set".
        self.port = device.port if device.port != 22 else int(config.get("port", 22))
        self.user = device.user or str(config.get("user", getpass.getuser()))
        key_files: list[str] | None = (
            [device.key_file] if device.key_file else config.get("identityfile")
        )
        known_hosts = _known_hosts(device)
        self.client = paramiko.SSHClient()
        if known_hosts.exists():
            self.client.load_host_keys(str(known_hosts))
        self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            self.client.connect(
                self.hostname,
                port=self.port,
                username=self.user,
                key_filename=key_files,  # type: ignore[arg-type]  # stubs say str; a list works
                timeout=CONNECT_TIMEOUT_S,
                banner_timeout=CONNECT_TIMEOUT_S,
                auth_timeout=CONNECT_TIMEOUT_S,
                allow_agent=True,
                look_for_keys=not key_files,
            )
        except paramiko.BadHostKeyException as exc:
            name = _key_name(self.hostname, self.port)
            raise HostKeyError(
                device.name,
                f"host key of {name} CHANGED (known {_fingerprint(exc.expected_key)},"
                f" offered {_fingerprint(exc.key)}); if the device was really"
                f" reinstalled: ssh-keygen -R '{name}' -f {known_hosts} and add the new key",
            ) from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise HostKeyError(
                    device.name,
                    f"unknown host key for {_key_name(self.hostname, self.port)} (not in"
                    f" {known_hosts}); if this is the right device: ssh-keyscan -p {self.port}"
                    f" {self.hostname} >> {known_hosts}",
                ) from None
            if isinstance(exc, paramiko.AuthenticationException):
                raise DeviceError(
                    device.name,
                    f"SSH login as {self.user}@{self.hostname}:{self.port} refused ({exc});"
                    " check ansible_user and ansible_ssh_private_key_file",
                ) from None
            raise DeviceError(
                device.name, f"SSH to {self.hostname}:{self.port} failed: {exc}"
            ) from None
        except (TimeoutError, OSError) as exc:
            raise DeviceError(
                device.name,
                f"cannot reach {self.hostname}:{self.port} ({exc.strerror or exc});"
                " is the device on and its sshd running?",
            ) from None
        self._sftp: paramiko.SFTPClient | None = None

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def run(self, argv: Sequence[str], stdin: bytes = b"") -> Process:
        transport = self.client.get_transport()
        if transport is None:
            raise DeviceError(self.device.name, "SSH connection closed")
        channel = transport.open_session()
        channel.exec_command(shlex.join(argv))  # the one place argv becomes a shell string
        if stdin:
            channel.sendall(stdin)
        channel.shutdown_write()
        return Process(
            self.device.name,
            argv,
            channel.makefile("rb"),
            channel.makefile_stderr("rb"),
            channel.recv_exit_status,
            channel.close,
        )

    def exists(self, remote: str) -> bool:
        try:
            self.sftp.stat(remote)
        except FileNotFoundError:
            return False
        return True

    def put(self, local: Path, remote: str) -> None:
        tmp = f"{remote}.{os.getpid()}.tmp"
        self.sftp.put(str(local), tmp)  # paramiko checks the size it wrote
        self.sftp.posix_rename(tmp, remote)

    def get(self, remote: str, local: Path) -> None:
        self.sftp.get(remote, str(local))

    def close(self) -> None:
        self.client.close()
