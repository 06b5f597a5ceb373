"""Ansible inventories as Ansible reads them: devices, their groups, tags and how to reach
them. YAML and INI files, group_vars/ and host_vars/ beside them, Ansible's variable
precedence and host patterns (docs/inventory.md)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.errors import ConfigError
from fleet.inventory import patterns, sources
from fleet.inventory.device import (
    DEFAULT_WORKDIR,
    DEVICE_CLASSES,
    HOST_NAME,
    HOST_RULE,
    LOCAL,
    Device,
    build_device,
    local_device,
)
from fleet.inventory.model import Data, VarsFiles, resolve

__all__ = [
    "DEFAULT_WORKDIR",
    "DEVICE_CLASSES",
    "HOST_NAME",
    "HOST_RULE",
    "LOCAL",
    "Device",
    "Inventory",
    "load_inventory",
    "local_device",
    "share",
]

INVENTORY_SUFFIXES = (".yaml", ".yml", ".ini")


@dataclass
class Inventory:
    devices: dict[str, Device] = field(default_factory=dict)
    # Every group with all its hosts (its children's included), in Ansible's order.
    groups: dict[str, list[str]] = field(default_factory=dict)
    # Each host's variables, resolved as `ansible-inventory --list` shows them.
    host_vars: dict[str, dict[str, Any]] = field(default_factory=dict)

    def tags(self) -> list[str]:
        return sorted({tag for device in self.devices.values() for tag in device.tags})

    def select(self, selectors: Iterable[str]) -> list[Device]:
        """Devices that Ansible host patterns select (`pi:&edge`, `all:!jetson`, `pi*`,
        `~regex`, `web[0:2]`, joined by ',' or ':'); a term may also be a fleet tag."""
        selectors = list(selectors)
        terms = [term for raw in selectors for term in patterns.split(raw)]
        if not terms:  # only empty selectors, as `--devices ,` gives: that runs nothing
            raise ConfigError(
                f"no device selected by {','.join(selectors)!r}; give groups, hosts or tags"
                " separated by commas"
            )
        hosts = [name for name in self.devices if name != LOCAL]
        groups = {name: members for name, members in self.groups.items() if name != LOCAL}
        chosen = patterns.evaluate(terms, hosts, groups, self._tagged, self._missing)
        if not chosen:
            raise ConfigError(
                f"the pattern {','.join(selectors)!r} selects no device; known groups: "
                f"{self._known()}"
            )
        return [self.devices[name] for name in chosen]

    def _tagged(self, term: str) -> list[str]:
        if term == LOCAL and LOCAL in self.devices:
            return [LOCAL]
        return [d.name for d in self.devices.values() if term in d.tags]

    def _missing(self, term: str) -> ConfigError:
        return ConfigError(f"no device matches {term!r}; known groups: {self._known()}")

    def _known(self) -> str:
        # Ansible's implicit `ungrouped` is worth naming only when some host is in it.
        names = [g for g, hosts in self.groups.items() if hosts or g != "ungrouped"]
        groups = ", ".join(sorted(names)) or "-"
        return (
            f"{groups}; hosts: {', '.join(sorted(self.devices))};"
            f" tags: {', '.join(self.tags()) or '-'}"
        )


def load_inventory(path: Path | None) -> Inventory:
    """Read an inventory file, or every *.yaml/*.yml/*.ini of a folder, with group_vars/
    and host_vars/ beside it; `local` is always there."""
    inventory = Inventory()
    if path is not None:
        data = Data()
        for file in _inventory_files(path):
            sources.read(file, data)
        data.reconcile()
        files = VarsFiles(path if path.is_dir() else path.parent)
        for name, host in data.hosts.items():
            values, origins = resolve(data, files, name)
            groups = tuple(g for g in host.groups if g not in ("all", "ungrouped"))
            device = build_device(name, values, origins, groups, host.where, host.file.parent)
            inventory.devices[name] = device
            inventory.host_vars[name] = values
        inventory.groups = {name: data.members(name) for name in data.groups}
    inventory.devices.setdefault(LOCAL, local_device())
    inventory.groups.setdefault(LOCAL, [LOCAL])
    return inventory


def _inventory_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in INVENTORY_SUFFIXES and p.is_file())
        if not files:
            raise ConfigError(f"{path}: no *.yaml, *.yml or *.ini inventory files in this folder")
        return files
    if not path.exists():
        raise ConfigError(f"{path}: inventory file not found (give --inventory FILE)")
    return [path]


def share(devices: Sequence[Device], k: int, n: int) -> list[Device]:
    """The K-th of N shares of `devices` (`--shard K/N`), so that N controllers (a CI
    matrix, one timer per site) split one selection. A device's share depends on its name
    alone: it stays in the same share whatever else the inventory holds."""
    return [d for d in devices if _share_of(d.name, n) == k - 1]


def _share_of(name: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % n
