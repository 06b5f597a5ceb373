"""Logging in to a device over its route: straight to it, through ProxyJump's jump hosts (each
an SSH connection of its own, checked like any device, whose forwarded channel carries the
next), or through a ProxyCommand's pipes. Every failure names the device and the hop."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import paramiko

from fleet.errors import DeviceError, HostKeyError
from fleet.transport import hostkeys
from fleet.transport.sshconfig import Hop, jump_hop, parsed_once

CONNECT_TIMEOUT_S = 10.0
# A ProxyCommand makes its own connection (often a whole SSH login, `ssh -W`) before the
# device's banner and key exchange can come: on a busy machine, well over 10 s. A command
# that fails is seen at once all the same (its end of the socket closes).
COMMAND_TIMEOUT_S = 60.0
# A jump chain that comes back to itself (a's config jumping through b, b's through a).
MAX_HOPS = 8


@dataclass(frozen=True)
class Command:
    """A running ProxyCommand, and the file its stderr goes to (read when it fails)."""

    process: subprocess.Popen[bytes]
    stderr: IO[bytes]

    def close(self) -> None:
        self.process.terminate()  # `ssh -W` and `nc` may outlive their stdin's end
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.stderr.close()


@dataclass
class Route:
    """The connections to one device: SSH clients nearest first (the last is the
    device's own) and the ProxyCommands that carry them."""

    clients: list[paramiko.SSHClient] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)

    @property
    def client(self) -> paramiko.SSHClient:
        return self.clients[-1]

    def close(self) -> None:
        for client in reversed(self.clients):
            client.close()
        for command in self.commands:
            command.close()


def login(hop: Hop) -> Route:
    """The route to `hop`, logged in at every hop; closed again when any hop fails."""
    route = Route()
    try:
        sock = _carrier(hop, route, 0)
        route.clients.append(_connect(hop, sock, route))
    except BaseException:
        route.close()
        raise
    return route


def _carrier(hop: Hop, route: Route, hops: int) -> socket.socket | paramiko.Channel | None:
    """What carries `hop`'s connection: None for TCP, a jump host's channel, or one end of
    a socket pair whose other end is a ProxyCommand's stdin and stdout (as ssh runs it:
    a real socket, so the command's exit is an end of file, not a busy wait)."""
    if hop.jump:
        if hops >= MAX_HOPS:
            raise hop.fail(
                f"more than {MAX_HOPS} jump hosts; does ProxyJump ({hop.proxy_from}) loop?",
                "error",
            )
        jump = jump_hop(hop, hop.jump[-1], hop.jump[:-1])
        sock = _carrier(jump, route, hops + 1)
        route.clients.append(_connect(jump, sock, route))
        return _forward(jump, route.client, hop)
    if hop.command:
        ours, theirs = socket.socketpair()
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 (Command closes it with the route)
        with theirs:
            argv = ["/bin/sh", "-c", f"exec {hop.command}"]  # the user's shell line, as ssh
            process = subprocess.Popen(
                argv, stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=stderr
            )
        route.commands.append(Command(process, stderr))
        return ours
    return None


def _forward(jump: Hop, client: paramiko.SSHClient, to: Hop) -> paramiko.Channel:
    """A channel from the jump host to the next hop (ssh -W): its TCP connection is made
    there, so only the jump host needs to reach it."""
    transport = client.get_transport()
    assert transport is not None  # connected just now
    try:
        return transport.open_channel(
            "direct-tcpip", (to.hostname, to.port), ("127.0.0.1", 0), timeout=CONNECT_TIMEOUT_S
        )
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise jump.fail(
            f"cannot open a connection to {to.where} ({exc or type(exc).__name__}); is"
            f" {to.label or 'the device'} on and its sshd running there, and may"
            f" {jump.hostname} forward (AllowTcpForwarding)? Check ProxyJump in {to.proxy_from}",
            "unreachable",
        ) from None


def _connect(hop: Hop, sock: Any, route: Route) -> paramiko.SSHClient:
    """An SSH client logged in to `hop` over `sock`, its host key checked strictly."""
    for key_file in hop.key_files or ():
        if not Path(key_file).expanduser().exists():
            raise hop.fail(f"SSH key {key_file} not found; fix {hop.key_from}", "login")
    client = paramiko.SSHClient()
    hostkeys.trust(client, hop)
    # paramiko's start_client returns at `timeout` whether or not the key exchange is done.
    timeout = COMMAND_TIMEOUT_S if isinstance(sock, socket.socket) else CONNECT_TIMEOUT_S
    keys = [_private_key(f) for f in hop.key_files or ()]
    pkey = keys[0] if len(keys) == 1 else None
    try:
        client.connect(
            hop.hostname,
            port=hop.port,
            username=hop.user,
            pkey=pkey,
            # stubs say str; a list works
            key_filename=None if pkey else list(hop.key_files or ()) or None,  # type: ignore[arg-type]
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=True,
            look_for_keys=not hop.key_files,
            sock=sock,
        )
        transport = client.get_transport()
        assert transport is not None  # connected
        hostkeys.check(hop, transport.get_remote_server_key())  # against every file
    except Exception as exc:
        failure = _failure(hop, exc, route)
        client.close()  # paramiko keeps its transport thread and socket otherwise
        if failure is exc:
            raise
        raise failure from None
    except BaseException:
        client.close()
        raise
    _keep_alive(hop, transport)
    return client


def _failure(hop: Hop, exc: Exception, route: Route) -> Exception:
    """The one line that says which hop failed and what fixes it."""
    if isinstance(exc, paramiko.BadHostKeyException):
        try:
            hostkeys.check(hop, exc.key)
        except HostKeyError as refused:  # always: paramiko refused a key a file names
            return refused
    if isinstance(exc, DeviceError):
        return exc
    if hop.command:  # None where a ProxyJump is set
        return hop.fail(_command_failed(hop, route.commands[-1], exc), "unreachable")
    if isinstance(exc, paramiko.AuthenticationException):
        who = "the user" if hop.label else "ansible_user"
        return hop.fail(
            f"SSH login as {hop.user}@{hop.where} refused ({exc}); check {who} and {hop.key_from}",
            "login",
        )
    fix = f"; check ProxyJump in {hop.proxy_from}" if hop.label else ""
    if isinstance(exc, paramiko.SSHException):
        return hop.fail(f"SSH to {hop.where} failed: {exc}{fix}", "unreachable")
    if isinstance(exc, OSError):
        # paramiko's NoValidConnectionsError wraps each address's error: say the first's.
        first = next(iter(getattr(exc, "errors", {}).values()), exc)
        reason = first.strerror or exc.strerror or str(exc) or type(exc).__name__
        if hop.label:
            return hop.fail(reason.lower() + fix, "unreachable")
        return hop.fail(
            f"cannot reach {hop.where} ({reason}); is the device on and its sshd running?",
            "unreachable",
        )
    return exc


def _command_failed(hop: Hop, command: Command, exc: Exception) -> str:
    """What the ProxyCommand said: how it ended and the last line it wrote to stderr."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        command.process.wait(timeout=2)  # it ends when its connection does
    command.stderr.seek(0)
    said = command.stderr.read().decode(errors="replace").strip().splitlines()
    ended = command.process.returncode
    detail = [f"exited {ended}"] if ended is not None else [str(exc) or type(exc).__name__]
    return (
        f"ProxyCommand `{hop.command}` ({hop.proxy_from}) failed: {'; '.join(detail + said[-1:])}"
    )


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

    return parsed_once("key", file, load)


def _keep_alive(hop: Hop, transport: paramiko.Transport) -> None:
    """ServerAliveInterval: a keepalive after that many idle seconds keeps NAT and firewall
    state open. With ServerAliveCountMax (set by the config) a connection whose server has
    not answered that many in a row is closed, as ssh does; fleet's default drops none."""
    if hop.alive_count is None:
        transport.set_keepalive(int(hop.alive_s))
        return
    threading.Thread(
        target=_watch, args=(transport, hop.alive_s, hop.alive_count), daemon=True
    ).start()


def _watch(transport: paramiko.Transport, interval: float, count: int) -> None:
    """Ask for an answer every `interval` s; close the connection when none came for
    `count` intervals. paramiko's own keepalive asks for no answer, so it cannot tell."""
    answered = threading.Event()
    answered.set()
    waited = 0
    while transport.is_active():
        time.sleep(interval)
        if answered.is_set():
            answered.clear()
            waited = 0
            threading.Thread(target=_ask, args=(transport, answered), daemon=True).start()
            continue
        waited += 1
        if waited >= count:
            transport.close()


def _ask(transport: paramiko.Transport, answered: threading.Event) -> None:
    # OpenSSH answers a request it does not know with a failure: an answer all the same.
    with contextlib.suppress(paramiko.SSHException, OSError, EOFError):
        transport.global_request("keepalive@openssh.com", wait=True)
    answered.set()
