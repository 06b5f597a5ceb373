"""Ansible-compatible inventory: devices, their groups, tags and how to reach them."""

from __future__ import annotations

import getpass
import hashlib
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet import paths, yamlfile
from fleet.errors import ConfigError

DEVICE_CLASSES = ("pi", "jetson", "mac", "gpu", "x86", "lab", "local")
LOCAL = "local"
# Relative to the login directory: SFTP and remote commands both start there.
DEFAULT_WORKDIR = ".cache/fleet-agent"

# A host's name is how runs, results and files refer to it, so it is a plain word (like a
# DNS name): no '/', '..' on its own, quotes, spaces or shell characters. Addresses with
# ':' (IPv6, `host:port`) go in ansible_host and ansible_port.
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
HOST_RULE = "letters, digits, '.', '_' or '-', starting with a letter or digit"
# What ssh takes as an address: a DNS name, an ssh_config alias or an IP address.
_ADDRESS = re.compile(r"[A-Za-z0-9:][A-Za-z0-9._:%-]{0,252}")
# A login name, as POSIX systems and macOS allow it (and user@domain for directories).
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,63}")
# Tags are selectors of --devices, which splits at ','.
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}")
_MAX_PATH = 4096

_FLEET_VARS = {"fleet_class", "fleet_python", "fleet_workdir", "fleet_tags"}
# Read by ansible/provision.yml only; allowed here so one inventory serves both.
_PROVISIONING_VARS = {
    "fleet_venv",
    "fleet_base_python",
    "fleet_runtimes",
    "fleet_cuda",
    "fleet_onnxruntime_wheel",
    "fleet_skip_packages",
    "fleet_authorized_key",
    "fleet_authorized_keys_file",
}


@dataclass(frozen=True)
class Device:
    name: str
    host: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    device_class: str = "x86"
    python: str = "python3"
    workdir: str = DEFAULT_WORKDIR
    tags: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    known_hosts: Path | None = None  # None: ~/.ssh/known_hosts
    source: str = ""  # file:line the device was declared at, for error messages

    @property
    def is_local(self) -> bool:
        return self.name == LOCAL


def local_device() -> Device:
    """The built-in device: this machine, reached without SSH."""
    return Device(
        name=LOCAL,
        host="localhost",
        user=getpass.getuser(),
        device_class=LOCAL,
        python=sys.executable,
        workdir=str(paths.cache_dir() / "local-device"),
        groups=(LOCAL,),
        source="built-in",
    )


@dataclass
class Inventory:
    devices: dict[str, Device] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)

    def tags(self) -> list[str]:
        return sorted({tag for device in self.devices.values() for tag in device.tags})

    def select(self, selectors: Iterable[str]) -> list[Device]:
        """Devices matching any selector: a group name, a host name or a tag."""
        chosen: dict[str, Device] = {}
        for raw in selectors:
            selector = raw.strip()
            if not selector:
                continue
            matches = [
                device
                for device in self.devices.values()
                if selector == device.name
                or device.name in self.groups.get(selector, ())
                or selector in device.tags
            ]
            if not matches:
                raise ConfigError(
                    f"no device matches {selector!r}; known groups: "
                    f"{', '.join(sorted(self.groups)) or '-'}; hosts: "
                    f"{', '.join(sorted(self.devices))}; tags: {', '.join(self.tags()) or '-'}"
                )
            chosen.update((device.name, device) for device in matches)
        if not chosen:  # only empty selectors, as `--devices ,` gives: that runs nothing
            raise ConfigError(
                f"no device selected by {','.join(selectors)!r}; give groups, hosts or tags"
                " separated by commas"
            )
        return list(chosen.values())


def load_inventory(path: Path | None) -> Inventory:
    """Read an inventory file (or every *.yml/*.yaml in a folder); `local` is always there."""
    inventory = Inventory()
    files = [] if path is None else _inventory_files(path)
    for file in files:
        _load_file(file, inventory)
    local = local_device()
    inventory.devices.setdefault(LOCAL, local)
    inventory.groups.setdefault(LOCAL, [LOCAL])
    return inventory


def _inventory_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        if not files:
            raise ConfigError(f"{path}: no *.yaml inventory files in this folder")
        return files
    if not path.exists():
        raise ConfigError(f"{path}: inventory file not found (give --inventory FILE)")
    return [path]


def _load_file(path: Path, inventory: Inventory) -> None:
    data = yamlfile.load(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an inventory is a mapping with a top-level 'all:' group")
    known_hosts = path.parent / "known_hosts"
    hosts: dict[str, dict[str, Any]] = {}
    host_groups: dict[str, list[str]] = {}
    host_where: dict[str, str] = {}

    def walk(name: str, group: Any, inherited: Mapping[str, Any], where: str) -> None:
        if group is None:
            group = {}
        if not isinstance(group, dict):
            raise ConfigError(
                f"{where}: group {yamlfile.show(name)} must be a mapping of hosts/children/vars"
            )
        unknown = set(group) - {"hosts", "children", "vars"}
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(
                f"{yamlfile.where(path, group, key)}: unknown key {yamlfile.show(key)} in group"
                f" {yamlfile.show(name)}; expected hosts, children or vars"
            )
        gvars = {**inherited, **_mapping(path, group, "vars")}
        inventory.groups.setdefault(name, [])
        for host, hvars in _mapping(path, group, "hosts").items():
            host_where.setdefault(host, yamlfile.where(path, group.get("hosts"), host))
            if not HOST_NAME.fullmatch(host):
                raise ConfigError(
                    f"{host_where[host]}: host name {yamlfile.show(host)} must be {HOST_RULE};"
                    " put an address with ':' in ansible_host"
                )
            if hvars is not None and not isinstance(hvars, dict):
                raise ConfigError(f"{host_where[host]}: host {host!r} vars must be a mapping")
            hosts[host] = {**hosts.get(host, {}), **gvars, **(hvars or {})}
            host_groups.setdefault(host, [])
            if name != "all":
                host_groups[host].append(name)
            inventory.groups[name].append(host)
        for child, child_group in _mapping(path, group, "children").items():
            walk(child, child_group, gvars, yamlfile.where(path, group.get("children"), child))
            inventory.groups[name].extend(inventory.groups[child])

    if "all" in data:
        walk("all", data["all"], {}, yamlfile.where(path, data, "all"))
    else:  # Ansible also accepts top-level groups without 'all'
        for name, group in data.items():
            walk(name, group, {}, yamlfile.where(path, data, name))
    for host, hvars in hosts.items():
        if host in inventory.devices:  # an earlier file of the folder has it
            raise ConfigError(
                f"{host_where[host]}: host {host!r} is also declared at"
                f" {inventory.devices[host].source}; declare each host in one file"
            )
        device = _device(host, hvars, tuple(host_groups[host]), host_where[host], known_hosts)
        inventory.devices[host] = device
    # As in Ansible, every host is in `all`, whether or not the file spells that group out.
    inventory.groups["all"] = list(dict.fromkeys([*inventory.groups.get("all", []), *hosts]))


def _mapping(path: Path, node: dict[str, Any], key: str) -> dict[str, Any]:
    value = node.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{yamlfile.where(path, node, key)}: {key!r} must be a mapping")
    return value


def _device(
    name: str, hvars: Mapping[str, Any], groups: tuple[str, ...], where: str, known_hosts: Path
) -> Device:
    if name == LOCAL:
        raise ConfigError(f"{where}: 'local' is the built-in device; rename this host")
    for key in hvars:
        if key.startswith("fleet_") and key not in _FLEET_VARS | _PROVISIONING_VARS:
            raise ConfigError(
                f"{where}: unknown variable {yamlfile.show(key)} for host {name!r};"
                f" fleet knows {', '.join(sorted(_FLEET_VARS))}"
            )
    device_class = hvars.get("fleet_class", "x86")
    if device_class not in DEVICE_CLASSES:
        raise ConfigError(
            f"{where}: fleet_class {yamlfile.show(device_class)} of {name!r} is not one of"
            f" {', '.join(DEVICE_CLASSES)}"
        )
    port = hvars.get("ansible_port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(
            f"{where}: ansible_port of {name!r} must be a port number from 1 to 65535,"
            f" not {yamlfile.show(port)}"
        )
    tags = hvars.get("fleet_tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ConfigError(f"{where}: fleet_tags of {name!r} must be a list of strings")
    for tag in tags:
        if not _TAG.fullmatch(tag):
            raise ConfigError(
                f"{where}: tag {yamlfile.show(tag)} of {name!r} must be 1-64 letters, digits,"
                " '.', '_', ':', '+' or '-', starting with a letter or digit"
            )
    host = _text(hvars, "ansible_host", where, _ADDRESS, "a host name or IP address")
    user = _text(hvars, "ansible_user", where, _USER, "a login name")
    key_file = _path(hvars, "ansible_ssh_private_key_file", where)
    if key_file is not None:
        key_path = Path(key_file).expanduser()
        if not key_path.is_absolute():  # Ansible resolves it against the inventory's folder
            key_path = known_hosts.parent / key_path
        key_file = str(key_path)
    return Device(
        name=name,
        host=host or name,
        port=port,
        user=user,
        key_file=key_file,
        device_class=device_class,
        python=_path(hvars, "fleet_python", where) or "python3",
        workdir=_path(hvars, "fleet_workdir", where) or DEFAULT_WORKDIR,
        tags=tuple(tags),
        groups=groups,
        known_hosts=known_hosts if known_hosts.exists() else None,
        source=where,
    )


def _text(
    hvars: Mapping[str, Any], key: str, where: str, pattern: re.Pattern[str], what: str
) -> str | None:
    """A variable that must be a plain word, as it becomes part of an SSH login; None when
    the host has none."""
    value = hvars.get(key)
    if value is None or (isinstance(value, str) and pattern.fullmatch(value)):
        return value
    raise ConfigError(f"{where}: {key} must be {what}, not {yamlfile.show(value)}")


def _path(hvars: Mapping[str, Any], key: str, where: str) -> str | None:
    """A path here or on the device: one line of text (commands quote it); None when the
    host has none."""
    value = hvars.get(key)
    if value is None or yamlfile.is_line(value, _MAX_PATH):
        return value
    raise ConfigError(
        f"{where}: {key} must be a path (text without control characters),"
        f" not {yamlfile.show(value)}"
    )


def share(devices: Sequence[Device], k: int, n: int) -> list[Device]:
    """The K-th of N shares of `devices` (`--shard K/N`), so that N controllers (a CI
    matrix, one timer per site) split one selection. A device's share depends on its name
    alone: it stays in the same share whatever else the inventory holds."""
    return [d for d in devices if _share_of(d.name, n) == k - 1]


def _share_of(name: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % n
