"""Where and how to connect to one host, as OpenSSH works it out: `~/.ssh/config` (or the
`-F` file) for the name, with the inventory's `ansible_ssh_common_args` and
`ansible_ssh_extra_args` over it, as `ssh` puts its command-line options first."""

from __future__ import annotations

import getpass
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import paramiko

from fleet.errors import DeviceError
from fleet.inventory import Device

# fleet's keepalive when the config sets none: keeps NAT and firewall state open; a hung
# device is found by the agent's missing heartbeat, so no connection is dropped for it.
KEEPALIVE_S = 10.0
ALIVE_COUNT_MAX = 3  # OpenSSH's ServerAliveCountMax when only the interval is set
_GLOBAL = "/etc/ssh/ssh_known_hosts"  # OpenSSH's GlobalKnownHostsFile
# What ssh accepts but would weaken host-key checking; fleet checks strictly regardless.
WEAK_CHECKING = ("no", "off", "accept-new")
# ssh's options that take a value (its getopt string), so one fleet does not use is skipped
# whole rather than read as the start of the next.
_WITH_VALUE = set("BDEFIJLOPQRSWbceilmopw")
_FLAG_OPTIONS = {"J": "proxyjump", "p": "port", "l": "user", "i": "identityfile"}
_JUMP = re.compile(
    r"(?:ssh://)?(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]\s]+\]|[^:@/\s\[\]]+)(?::(?P<port>\d+))?/?"
)
T = TypeVar("T")

_parsed: dict[tuple[str, str, int, int], Any] = {}
_parsed_lock = threading.Lock()


def parsed_once(kind: str, path: Path, parse: Callable[[Path], T]) -> T:
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


@dataclass(frozen=True)
class Hop:
    """One SSH connection of a route to a device: the device itself, or a jump host."""

    device: str  # the device the route leads to: every error names it
    label: str  # how errors name this hop: "" for the device, else "jump host NAME"
    hostname: str
    port: int
    user: str
    key_files: tuple[str, ...] | None  # None: ssh-agent and the default keys
    key_from: str  # where the keys or the login were set, for the fix in an error
    jump: tuple[str, ...]  # ProxyJump: the jump hosts to pass first, nearest first
    command: str | None  # ProxyCommand, its tokens expanded
    proxy_from: str  # where ProxyJump or ProxyCommand was set, for the fix in an error
    alive_s: float
    alive_count: int | None  # None: a connection is never dropped for missed keepalives
    known_hosts: tuple[Path, ...]  # every file is read; a key in any of them is accepted
    weak_checking: str  # "StrictHostKeyChecking no (FILE)" when set so: named, not followed
    config: Path  # the ssh config file of the whole route (`-F`, else ~/.ssh/config)
    beside: Path | None  # the known_hosts beside the inventory, for the jump hosts too

    @property
    def where(self) -> str:
        return f"{self.hostname}:{self.port}"

    def fail(self, message: str, kind: str) -> DeviceError:
        """An error of this hop, named as the device and (for a jump host) the hop."""
        prefix = f"{self.label} ({self.where}): " if self.label else ""
        return DeviceError(self.device, prefix + message, kind)


def device_hop(device: Device) -> Hop:
    """The route's last hop: the device, its inventory values over its ssh config."""
    given = _inventory_options(device)
    config = Path(given.pop("configfile", "~/.ssh/config")).expanduser()
    # The inventory's own variables first, as Ansible passes them to ssh.
    if device.port != 22:
        given["port"] = str(device.port)
    if device.user:
        given["user"] = device.user
    if device.key_file:
        given["identityfile"] = device.key_file
    hop = _hop(
        device,
        "",
        device.host,
        config,
        device.known_hosts,
        given,
        f"ansible_ssh_common_args ({device.ssh_args_from or device.source})",
    )
    if device.key_file:
        return replace(hop, key_from=f"ansible_ssh_private_key_file ({device.source})")
    return hop


def jump_hop(route: Hop, spec: str, before: Sequence[str]) -> Hop:
    """The jump host `spec` ([user@]host[:port], or ssh://...) of `route`'s ProxyJump, reached
    through `before` (the hops ahead of it in that ProxyJump) or else its own ssh config."""
    match = _JUMP.fullmatch(spec.strip())
    if not match:
        raise route.fail(
            f"ProxyJump {spec!r} ({route.proxy_from}) is not [user@]host[:port]; fix it there",
            "error",
        )
    given = {"port": match["port"], "user": match["user"], "proxyjump": ",".join(before)}
    host = match["host"].strip("[]")
    return _hop(
        route,
        f"jump host {host}",
        host,
        route.config,
        route.beside,
        {k: v for k, v in given.items() if v},
        route.proxy_from,
    )


def _hop(
    route: Device | Hop,
    label: str,
    alias: str,
    config_path: Path,
    beside: Path | None,
    given: Mapping[str, str],
    given_from: str,
) -> Hop:
    """A hop to `alias`: `given` options first (the inventory's, or a ProxyJump's user and
    port), then the ssh config's for that name, then OpenSSH's defaults."""
    device = route.name if isinstance(route, Device) else route.device
    config = _lookup(config_path, alias, given, device, given_from)

    def option(key: str) -> tuple[Any, str]:
        return config.get(key), given_from if key in given else str(config_path)

    if "proxyjump" in given or "proxycommand" in given:  # one overrides both of the config
        config = {k: v for k, v in config.items() if k in given or "proxy" not in k}
    port, _ = option("port")
    keys, keys_from = option("identityfile")
    jump, jump_from = option("proxyjump")
    command, command_from = option("proxycommand")
    interval, interval_from = option("serveraliveinterval")
    count, count_from = option("serveralivecountmax")
    checking, checking_from = option("stricthostkeychecking")
    jumps = tuple(j for j in str(jump or "").split(",") if j) if jump != "none" else ()
    alive = _whole(interval, "ServerAliveInterval", interval_from, device) if interval else 0
    files = [beside] if beside else []
    user_files = str(config.get("userknownhostsfile", "~/.ssh/known_hosts"))
    files += [Path(f).expanduser() for f in user_files.split()]
    files += [Path(f) for f in str(config.get("globalknownhostsfile", _GLOBAL)).split()]
    return Hop(
        device=device,
        label=label,
        hostname=str(config.get("hostname", alias)),
        port=_whole(port or 22, "Port", given_from, device),
        user=str(config.get("user") or getpass.getuser()),
        key_files=tuple(keys) if keys else None,
        key_from=f"IdentityFile ({keys_from})",
        jump=jumps,
        command=None if jumps else command,
        proxy_from=jump_from if jumps else command_from,
        alive_s=float(alive or KEEPALIVE_S),
        alive_count=(
            _whole(count or ALIVE_COUNT_MAX, "ServerAliveCountMax", count_from, device)
            if alive
            else None
        ),
        known_hosts=tuple(files),
        weak_checking=(
            f"StrictHostKeyChecking {checking} ({checking_from})"
            if str(checking).lower() in WEAK_CHECKING
            else ""
        ),
        config=config_path,
        beside=beside,
    )


def _lookup(
    path: Path, alias: str, given: Mapping[str, str], device: str, given_from: str
) -> dict[str, Any]:
    """The config for `alias` with `given` read first, as ssh reads its command line's
    options before its config file: so they win, and tokens such as ProxyCommand's %p
    expand to the inventory's port."""
    lines = ["Host *"]
    for key, value in given.items():
        if "\n" in value:
            raise DeviceError(device, f"{key} ({given_from}) must be one line", "error")
        lines += [f"  {key} {v}" for v in value.split("\0")]
    first = "\n".join(lines) + "\n"
    if not path.exists():
        return dict(paramiko.SSHConfig.from_text(first).lookup(alias))

    def parse(p: Path) -> paramiko.SSHConfig:
        return paramiko.SSHConfig.from_text(first + p.read_text(errors="replace"))

    found = dict(parsed_once(f"config {first}", path, parse).lookup(alias))
    if "identityfile" in given:  # the inventory's key only, not the config's as well
        found["identityfile"] = found["identityfile"][: len(given["identityfile"].split("\0"))]
    return found


def _whole(value: Any, key: str, where: str, device: str) -> int:
    text = str(value)
    if not text.isdigit():
        raise DeviceError(device, f"{key} {text!r} ({where}) must be a whole number", "error")
    return int(text)


def _inventory_options(device: Device) -> dict[str, str]:
    """ssh's options in the inventory's `ansible_ssh_common_args`/`_extra_args`, as config
    keywords ('\\0' between several IdentityFiles); the first of each wins, as in ssh. Options
    that do not change where or how fleet connects (-C, -A, -o ControlMaster=...) are left."""
    options: dict[str, str] = {}
    args = list(device.ssh_args)
    while args:
        arg = args.pop(0)
        flags = arg[1:] if arg.startswith("-") and len(arg) > 1 else ""
        if not flags:
            raise _bad_args(device, f"{arg!r} is not an ssh option")
        for i, flag in enumerate(flags):
            if flag not in _WITH_VALUE:
                continue
            value = flags[i + 1 :] or (args.pop(0) if args else "")
            if not value:
                raise _bad_args(device, f"-{flag} needs a value")
            if flag == "o":
                key, _, rest = value.replace("=", " ", 1).partition(" ")
                _add(options, key.lower(), rest.strip())
            elif flag == "F":
                _add(options, "configfile", value)
            elif flag in _FLAG_OPTIONS:
                _add(options, _FLAG_OPTIONS[flag], value)
            break
    return options


def _add(options: dict[str, str], key: str, value: str) -> None:
    if key == "identityfile" and key in options:
        options[key] += "\0" + value
    else:
        options.setdefault(key, value)


def _bad_args(device: Device, problem: str) -> DeviceError:
    return DeviceError(
        device.name,
        f"ansible_ssh_common_args/ansible_ssh_extra_args"
        f" ({device.ssh_args_from or device.source}): {problem}; write them as on ssh's command"
        " line, e.g. '-o ProxyJump=user@bastion:2222'",
        "error",
    )
