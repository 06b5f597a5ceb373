"""Groups and hosts as Ansible's InventoryData holds them, host ranges, and each host's
variables merged in Ansible's order, group_vars/ and host_vars/ included."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet import yamlfile
from fleet.errors import ConfigError
from fleet.inventory.device import check_host_name

# A range such as pi[01:99] expands to one host per value; this bounds what a typo
# (pi[0:999999]) makes.
MAX_RANGE_HOSTS = 10_000
# Ansible's YAML_FILENAME_EXTENSIONS, after the bare name, in the order it tries them.
VARS_EXTENSIONS = ("", ".yml", ".yaml", ".json")


@dataclass
class Group:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)  # declared in this group, in order
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    priority: int = 1


@dataclass
class Host:
    name: str
    where: str  # file:line of its first declaration
    file: Path
    vars: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)  # the groups that list it, in order


class Data:
    """Every group and host of an inventory, before their variables are merged."""

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {"all": Group("all"), "ungrouped": Group("ungrouped")}
        self.hosts: dict[str, Host] = {}
        # Group name -> ancestors, depth: kept once the groups are all read (see add_child).
        self._ancestors: dict[str, set[str]] = {}
        self._depths: dict[str, int] = {}
        self.add_child("all", "ungrouped", "")

    def group(self, name: str) -> Group:
        if name not in self.groups:
            self.groups[name] = Group(name)
        return self.groups[name]

    def add_host(self, group: str, name: str, where: str, file: Path) -> Host:
        check_host_name(name, where)
        host = self.hosts.get(name)
        if host is None:
            host = self.hosts[name] = Host(name, where, file)
        elif host.file != file:  # fleet's rule: one file of a folder declares a host
            raise ConfigError(
                f"{where}: host {name!r} is also declared at {host.where};"
                " declare each host in one file"
            )
        members = self.group(group).hosts
        if name not in members:
            members.append(name)
            host.groups.append(group)
        return host

    def add_child(self, parent: str, child: str, where: str) -> None:
        if child == parent or parent in self.ancestors(child) | self.descendants(child):
            raise ConfigError(
                f"{where}: group {child!r} as a child of {parent!r} makes a loop;"
                " a group cannot contain itself"
            )
        if child not in self.group(parent).children:
            self._ancestors.clear()
            self._depths.clear()
            self.groups[parent].children.append(child)
            self.group(child).parents.append(parent)

    def set_group_var(self, group: str, key: str, value: Any, where: str) -> None:
        target = self.group(group)
        if key == "ansible_group_priority":  # as in Ansible: a setting, not a variable
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ConfigError(f"{where}: ansible_group_priority must be a whole number")
            try:
                target.priority = int(value)
            except ValueError:
                raise ConfigError(
                    f"{where}: ansible_group_priority must be a whole number, not"
                    f" {yamlfile.show(value)}"
                ) from None
            return
        target.vars[key] = value
        target.origins[key] = where

    def ancestors(self, name: str) -> set[str]:
        if name not in self._ancestors:
            self._ancestors[name] = self._walk(name, "parents")
        return self._ancestors[name]

    def descendants(self, name: str) -> set[str]:
        return self._walk(name, "children")

    def _walk(self, name: str, relation: str) -> set[str]:
        seen: set[str] = set()
        todo = list(getattr(self.groups[name], relation)) if name in self.groups else []
        while todo:
            item = todo.pop()
            if item not in seen:
                seen.add(item)
                todo.extend(getattr(self.groups[item], relation))
        return seen

    def reconcile(self) -> None:
        """As Ansible ends a parse: every group is under `all`; hosts in no group are in
        `ungrouped`, and no host in another group stays there."""
        for name in list(self.groups):
            if name != "all" and not self.groups[name].parents:
                self.add_child("all", name, "")
        ungrouped = self.groups["ungrouped"]
        for host in self.hosts.values():
            others = set(host.groups) - {"all", "ungrouped"}
            others |= {a for g in others for a in self.ancestors(g)}
            if others - {"all", "ungrouped"}:
                if "ungrouped" in host.groups:
                    host.groups.remove("ungrouped")
                    ungrouped.hosts.remove(host.name)
            elif "ungrouped" not in host.groups:
                ungrouped.hosts.append(host.name)

    def members(self, name: str) -> list[str]:
        """A group's hosts with its descendants', in Ansible's order (Group.get_hosts)."""
        group = self.groups[name]
        ordered = [name, *group.children]
        seen = {name}
        todo = set(group.children)
        while todo:
            seen |= todo
            new: list[str] = []
            for item in sorted(todo, key=ordered.index):
                new.extend(self.groups[item].children)
            for item in new:
                if item not in seen and item not in ordered:
                    ordered.append(item)
            todo = set(new) - seen
        hosts: dict[str, None] = {}
        for item in ordered:
            hosts.update(dict.fromkeys(self.groups[item].hosts))
        return list(hosts)

    def depth(self, name: str) -> int:
        """The longest way down from `all` (0) to the group, as Ansible counts it."""
        if name not in self._depths:
            parents = self.groups[name].parents
            self._depths[name] = 1 + max((self.depth(p) for p in parents), default=-1)
        return self._depths[name]

    def sorted_groups(self, names: set[str]) -> list[Group]:
        """Ansible's sort_groups: by depth, then ansible_group_priority, then name."""
        groups = [self.groups[n] for n in names]
        return sorted(groups, key=lambda g: (self.depth(g.name), g.priority, g.name))


def expand(pattern: str, where: str) -> list[str]:
    """Host names of `pattern`, with ranges `[01:20]`, `[a:c]`, `[1:9:2]` expanded as
    Ansible's expand_hostname_range does."""
    if not 0 <= pattern.find("[") < pattern.find(":") < pattern.find("]"):
        return [pattern]
    head, rest = pattern.split("[", 1)
    spec, tail = rest.split("]", 1)
    bounds = spec.split(":")
    if len(bounds) not in (2, 3):
        raise ConfigError(f"{where}: host range [{spec}] must be [begin:end] or [begin:end:step]")
    begin, end = bounds[0] or "0", bounds[1]
    step = bounds[2] if len(bounds) == 3 else "1"
    if not end:
        raise ConfigError(f"{where}: host range [{spec}] must give an end value")
    width = len(begin) if begin[0] == "0" and len(begin) > 1 else 0
    if width and len(end) != width:
        raise ConfigError(f"{where}: host range [{spec}]: begin and end need the same width")
    values: list[str]
    try:
        if begin in string.ascii_letters and end in string.ascii_letters:
            first, last = string.ascii_letters.index(begin), string.ascii_letters.index(end)
            if first > last:
                raise ConfigError(f"{where}: host range [{spec}]: begin is after end")
            values = list(string.ascii_letters[first : last + 1 : int(step)])
        else:
            numbers = range(int(begin), int(end) + 1, int(step))
            if len(numbers) > MAX_RANGE_HOSTS:
                raise ConfigError(
                    f"{where}: host range [{spec}] makes {len(numbers)} hosts;"
                    f" at most {MAX_RANGE_HOSTS}"
                )
            values = [str(n).zfill(width) for n in numbers]
    except ValueError:
        raise ConfigError(
            f"{where}: host range [{spec}] must be numbers ([01:20]) or letters ([a:f])"
        ) from None
    names: list[str] = []
    for value in values:
        names.extend(expand(f"{head}{value}{tail}", where))
        if len(names) > MAX_RANGE_HOSTS:
            raise ConfigError(f"{where}: host ranges make more than {MAX_RANGE_HOSTS} hosts")
    return names


class VarsFiles:
    """group_vars/ and host_vars/ beside the inventory, read once each, as Ansible's
    host_group_vars plugin finds them: NAME, NAME.yml, NAME.yaml, NAME.json (the first that
    exists) or every file of a folder NAME/ (sorted, recursively)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._folders = {kind: (base / kind).is_dir() for kind in ("group_vars", "host_vars")}
        self._cache: dict[tuple[str, str], tuple[dict[str, Any], dict[str, str]]] = {}

    def get(self, kind: str, name: str) -> tuple[dict[str, Any], dict[str, str]]:
        key = (kind, name)
        if key not in self._cache:
            values: dict[str, Any] = {}
            origins: dict[str, str] = {}
            found = _find(self.base / kind, name) if self._folders[kind] else []
            for file in found:
                data = yamlfile.load(file)
                if data is None:
                    continue
                if not isinstance(data, dict):
                    raise ConfigError(
                        f"{yamlfile.where(file, data)}: {kind} file must be a mapping of"
                        " variable: value"
                    )
                values.update(data)
                origins.update({k: yamlfile.where(file, data, k) for k in data})
            self._cache[key] = (values, origins)
        return self._cache[key]


def _find(folder: Path, name: str) -> list[Path]:
    for extension in VARS_EXTENSIONS:
        path = folder / f"{name}{extension}"
        if path.is_dir():
            return _folder_files(path)
        if path.exists():
            return [path]
    return []


def _folder_files(folder: Path) -> list[Path]:
    found: list[Path] = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.name.startswith(".") or path.name.endswith("~"):
            continue
        if path.is_dir() and not path.suffix:
            found.extend(_folder_files(path))
        elif path.is_file() and path.suffix in VARS_EXTENSIONS:
            found.append(path)
    return found


def resolve(data: Data, files: VarsFiles, name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A host's variables and where each was set, merged in Ansible's default order
    (VARIABLE_PRECEDENCE): `all` from the inventory, its other groups from the inventory,
    group_vars/all, group_vars of its other groups, the host's own inventory vars, then
    host_vars/NAME. Groups merge shallowest first, then by priority, then by name."""
    host = data.hosts[name]
    groups = {g for direct in host.groups for g in {direct, *data.ancestors(direct)}}
    groups.discard("all")
    ordered = data.sorted_groups(groups)
    layers: list[tuple[dict[str, Any], dict[str, str]]] = [
        (data.groups["all"].vars, data.groups["all"].origins),
        *((g.vars, g.origins) for g in ordered),
        files.get("group_vars", "all"),
        *(files.get("group_vars", g.name) for g in ordered),
        (host.vars, host.origins),
        files.get("host_vars", name),
    ]
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for layer_values, layer_origins in layers:
        values.update(layer_values)
        origins.update(layer_origins)
    return values, origins
