"""Inventory files, read as Ansible's yaml and ini inventory plugins read them."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from typing import Any

from fleet import yamlfile
from fleet.errors import ConfigError
from fleet.inventory.model import Data, expand

YAML_SUFFIXES = (".yaml", ".yml", ".json")
_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$")
_GROUP_NAME = re.compile(r"^([^:\]\s]+)\s*(?:#.*)?$")


def read(path: Path, data: Data) -> None:
    """Add the groups and hosts of one inventory file: YAML by its suffix; INI by a .ini
    suffix or, for any other name, when the text is not a YAML mapping (as Ansible tries
    its yaml plugin, then its ini plugin)."""
    if path.suffix in YAML_SUFFIXES:
        read_yaml(path, yamlfile.load(path), data)
    elif path.suffix == ".ini":
        read_ini(path, yamlfile.read_text(path), data)
    else:
        try:
            document = yamlfile.load(path)
        except ConfigError:
            document = None
        if isinstance(document, dict):
            read_yaml(path, document, data)
        else:
            read_ini(path, yamlfile.read_text(path), data)


def read_yaml(path: Path, document: Any, data: Data) -> None:
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: an inventory is a mapping with a top-level 'all:' group")
    for name, group in document.items():
        _yaml_group(path, data, name, group, yamlfile.where(path, document, name))


def _yaml_group(path: Path, data: Data, name: str, group: Any, where: str) -> None:
    data.group(name)
    if group is None:
        return
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
    group_vars = _mapping(path, group, "vars")
    for key, value in group_vars.items():
        data.set_group_var(name, key, value, yamlfile.where(path, group_vars, key))
    children = _mapping(path, group, "children")
    for child, child_group in children.items():
        at = yamlfile.where(path, children, child)
        _yaml_group(path, data, child, child_group, at)
        data.add_child(name, child, at)
    hosts = _mapping(path, group, "hosts")
    for pattern, host_vars in hosts.items():
        at = yamlfile.where(path, hosts, pattern)
        if host_vars is not None and not isinstance(host_vars, dict):
            raise ConfigError(f"{at}: host {pattern!r} vars must be a mapping")
        for host_name in expand(pattern, at):
            host = data.add_host(name, host_name, at, path)
            for key, value in (host_vars or {}).items():
                host.vars[key] = value
                host.origins[key] = yamlfile.where(path, host_vars, key)


def _mapping(path: Path, node: dict[str, Any], key: str) -> dict[str, Any]:
    value = node.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{yamlfile.where(path, node, key)}: {key!r} must be a mapping")
    return value


def read_ini(path: Path, text: str, data: Data) -> None:
    """Ansible's INI format: host lines (`name key=value ...`) before any section go to
    `ungrouped`; `[group]` lists hosts, `[group:children]` groups, `[group:vars]`
    `key=value` lines. Values are Python literals where they parse as one, else text."""
    group, state = "ungrouped", "hosts"
    # Groups named before they are declared: name -> (where, state, parents)
    pending: dict[str, tuple[str, str, list[str]]] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        where = f"{path}:{number}"
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        section = _SECTION.match(line)
        if section:
            group, state = section.group(1), section.group(2) or "hosts"
            if state not in ("hosts", "children", "vars"):
                raise ConfigError(
                    f"{where}: section [{group}:{state}] has an unknown type; use"
                    f" [{group}], [{group}:children] or [{group}:vars]"
                )
            if group not in data.groups:
                if state == "vars" and group not in pending:
                    pending[group] = (where, state, [])
                data.group(group)
            if group in pending and state != "vars":
                _declare(data, group, pending)
            continue
        if line.startswith("[") and line.endswith("]"):
            raise ConfigError(
                f"{where}: invalid section {line!r}; write [group], [group:children] or"
                " [group:vars], without spaces"
            )
        if state == "hosts":
            _ini_host(path, where, line, group, data)
        elif state == "vars":
            if "=" not in line:
                raise ConfigError(f"{where}: expected key=value in [{group}:vars], got {line!r}")
            key, value = (part.strip() for part in line.split("=", 1))
            data.set_group_var(group, key, _ini_value(value), where)
        else:
            match = _GROUP_NAME.match(line)
            if not match:
                raise ConfigError(f"{where}: {line!r} is not a group name in [{group}:children]")
            child = match.group(1)
            if child not in data.groups:
                pending.setdefault(child, (where, "children", []))[2].append(group)
            else:
                data.add_child(group, child, where)
    for name, (where, state, parents) in pending.items():
        if state == "vars":
            raise ConfigError(
                f"{where}: [{name}:vars] is for a group that is never declared; add [{name}]"
            )
        raise ConfigError(
            f"{where}: [{parents[-1]}:children] names {name!r}, a group that is never"
            f" declared; add [{name}]"
        )


def _declare(data: Data, group: str, pending: dict[str, tuple[str, str, list[str]]]) -> None:
    where, state, parents = pending.pop(group)
    if state != "children":
        return
    for parent in parents:
        data.add_child(parent, group, where)
        if parent in pending and pending[parent][1] == "children":
            _declare(data, parent, pending)


def _ini_host(path: Path, where: str, line: str, group: str, data: Data) -> None:
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as exc:
        raise ConfigError(f"{where}: cannot read this host line ({exc})") from None
    if not tokens:
        return
    host_vars: dict[str, Any] = {}
    for token in tokens[1:]:
        if "=" not in token:
            raise ConfigError(
                f"{where}: expected key=value after the host name, got {yamlfile.show(token)}"
            )
        key, value = token.split("=", 1)
        host_vars[key] = _ini_value(value)
    for name in expand(tokens[0], where):
        host = data.add_host(group, name, where, path)
        host.vars.update(host_vars)
        host.origins.update(dict.fromkeys(host_vars, where))


def _ini_value(text: str) -> Any:
    """As Ansible's ini plugin: a Python literal (2222, True, [1, 2]) where it is one."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return text
    return _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is ... or isinstance(value, bytes | complex):
        return text_of(value)
    return value


def text_of(value: Any) -> str:
    return "..." if value is ... else str(value)
