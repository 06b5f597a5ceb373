"""SSH devices through paramiko, with strict host-key checking and ~/.ssh/config."""

from __future__ import annotations

import base64
import contextlib
import getpass
import hashlib
import os
import posixpath
import shlex
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

from fleet.errors import DeviceError, HostKeyError
from fleet.inventory import Device
from fleet.transport.base import Process, Transport
from fleet.transport.refusal import answered, refusal

CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 10.0
T = TypeVar("T")


def _known_hosts(device: Device) -> Path:
    return device.known_hosts or Path("~/.ssh/known_hosts").expanduser()


_parsed: dict[tuple[str, str, int, int], Any] = {}
_parsed_lock = threading.Lock()


def _once(kind: str, path: Path, parse: Callable[[Path], T]) -> T:
    """`parse(path)`, done once per version of the file (its size and mtime) in this process,
    not once per device: each of 512 connections parsing a 512-line known_hosts file was
    O(devices²) key objects, 60 ms of CPU per device."""
    version = path.stat()
    key = (kind, str(path), version.st_mtime_ns, version.st_size)
    with _parsed_lock:
        if key not in _parsed:
            _parsed[key] = parse(path)
        found: T = _parsed[key]
    return found


def _ssh_config(host: str) -> dict[str, Any]:
    path = Path("~/.ssh/config").expanduser()
    if not path.exists():
        return {}
    config = _once("config", path, lambda p: paramiko.SSHConfig.from_path(str(p)))
    return dict(config.lookup(host))


class _KnownHosts:
    """A known_hosts file, indexed by host name; hashed names (`|1|salt|hash`) are matched
    the way paramiko matches them."""

    def __init__(self, path: Path) -> None:
        self.by_name: dict[str, dict[str, paramiko.PKey]] = {}
        self.hashed = paramiko.HostKeys()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                entry = HostKeyEntry.from_line(line, number)
            except (paramiko.SSHException, InvalidHostKey):
                continue  # as paramiko's loader: an entry it cannot read is no entry
            if entry is None or entry.key is None:
                continue
            key_type = entry.key.get_name()
            for name in entry.hostnames:
                if name.startswith("|1|"):
                    self.hashed.add(name, key_type, entry.key)
                else:  # the first entry for a name and key type wins, as in paramiko
                    self.by_name.setdefault(name, {}).setdefault(key_type, entry.key)

    def keys_of(self, name: str) -> dict[str, paramiko.PKey]:
        found = dict(self.by_name.get(name, {}))
        hashed = self.hashed.lookup(name) if len(self.hashed) else None
        for key_type, key in (hashed or {}).items():
            found.setdefault(key_type, key)
        return found


def _private_key(path: str) -> paramiko.PKey | None:
    """The key in `path`, read once per run; None where paramiko must read it itself at each
    connection (a passphrase, a certificate beside it, a format from_path does not read)."""
    file = Path(path).expanduser()
    if Path(f"{file}-cert.pub").exists():
        return None

    def load(p: Path) -> paramiko.PKey | None:
        try:
            return paramiko.PKey.from_path(p)
        except (paramiko.SSHException, OSError, ValueError):
            return None

    return _once("key", file, load)


def _fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's way of showing a key: SHA256:base64 without padding."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _key_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class _RefuseUnknownKey(paramiko.MissingHostKeyPolicy):
    """Like paramiko's RejectPolicy, but the refusal names the key offered, so the user can
    compare it with the device's own before trusting it."""

    def __init__(self, device: Device, port: int, known_hosts: Path) -> None:
        self.device = device
        self.port = port
        self.known_hosts = known_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        host = hostname.split("]")[0].lstrip("[")
        raise HostKeyError(
            self.device.name,
            f"unknown host key {_fingerprint(key)} for {hostname} (not in {self.known_hosts});"
            " compare it with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the device,"
            f" then: ssh-keyscan -p {self.port} {host} >> {self.known_hosts}",
        )


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
        config = _ssh_config(device.host)
        self.hostname = str(config.get("hostname", device.host))
        # The inventory wins over ~/.ssh/config, as in Ansible; port 22 means "not set".
        self.port = device.port if device.port != 22 else int(config.get("port", 22))
        self.user = device.user or str(config.get("user", getpass.getuser()))
        key_files: list[str] | None = (
            [device.key_file] if device.key_file else config.get("identityfile")
        )
        for key_file in key_files or []:
            if not Path(key_file).expanduser().exists():
                raise DeviceError(
                    device.name,
                    f"SSH key {key_file} not found; fix ansible_ssh_private_key_file"
                    f" ({device.source}) or IdentityFile in ~/.ssh/config",
                    "login",
                )
        known_hosts = _known_hosts(device)
        self.client = paramiko.SSHClient()
        if known_hosts.exists():
            # This device's entries only, from the file parsed once per run; what paramiko's
            # load_host_keys would have found for it.
            name = _key_name(self.hostname, self.port)
            ours = self.client.get_host_keys()
            for key_type, key in (
                _once("known_hosts", known_hosts, _KnownHosts).keys_of(name).items()
            ):
                ours.add(name, key_type, key)
        self.client.set_missing_host_key_policy(_RefuseUnknownKey(device, self.port, known_hosts))
        try:
            self._connect(key_files, known_hosts)
        except BaseException:
            self.client.close()  # paramiko keeps its transport thread and socket otherwise
            raise
        # As ServerAliveInterval: keeps idle NAT and firewall state open and finds a broken
        # TCP connection; a hung device is found by the agent's missing heartbeat.
        transport = self.client.get_transport()
        if transport is not None:
            transport.set_keepalive(int(KEEPALIVE_S))
        self._sftp: paramiko.SFTPClient | None = None
        self._dropped = False  # a command's channel was closed by the connection ending

    def _connect(self, key_files: list[str] | None, known_hosts: Path) -> None:
        device = self.device
        # A key read once per run rather than at each connection (paramiko tries each key
        # type in turn on the file); the same key, so the same login.
        keys = [_private_key(f) for f in key_files or []]
        pkey = keys[0] if len(keys) == 1 else None
        try:
            self.client.connect(
                self.hostname,
                port=self.port,
                username=self.user,
                pkey=pkey,
                # stubs say str; a list works
                key_filename=None if pkey else key_files,  # type: ignore[arg-type]
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
            if isinstance(exc, paramiko.AuthenticationException):
                raise DeviceError(
                    device.name,
                    f"SSH login as {self.user}@{self.hostname}:{self.port} refused ({exc});"
                    " check ansible_user and ansible_ssh_private_key_file",
                    "login",
                ) from None
            raise DeviceError(
                device.name, f"SSH to {self.hostname}:{self.port} failed: {exc}", "unreachable"
            ) from None
        except (TimeoutError, OSError) as exc:
            raise DeviceError(
                device.name,
                f"cannot reach {self.hostname}:{self.port} ({exc.strerror or exc});"
                " is the device on and its sshd running?",
                "unreachable",
            ) from None

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

    def put(self, local: Path, remote: str) -> None:
        tmp = f"{remote}.{os.getpid()}.{threading.get_ident()}.tmp"
        what = f"sending {local.name} to {remote}"
        with self._device_errors(what, posixpath.dirname(remote), local.stat().st_size):
            try:
                self.sftp.put(str(local), tmp)  # paramiko checks the size it wrote
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
        self.client.close()
