"""YAML loading that remembers line numbers, so errors can name file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fleet.errors import ConfigError


class YamlDict(dict[str, Any]):
    """A mapping from a YAML file; knows its own line and the line of each key."""

    line: int = 0
    key_lines: dict[str, int]


class YamlList(list[Any]):
    line: int = 0


class _Loader(yaml.SafeLoader):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> YamlDict:
    result = YamlDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        result[str(key)] = loader.construct_object(value_node, deep=True)
        result.key_lines[str(key)] = key_node.start_mark.line + 1
    return result


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> YamlList:
    result = YamlList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


def read_text(path: Path) -> str:
    """A user's configuration file as text; what stops that is a ConfigError naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc


def load(path: Path) -> Any:
    """Parse a YAML file; a syntax error becomes a ConfigError naming file and line."""
    text = read_text(path)
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {exc.problem}") from exc
    except yaml.YAMLError as exc:  # e.g. a control character: the reader has no line mark
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc


def where(path: Path, node: Any, key: str | None = None) -> str:
    """`file:line` of a node (or of one of its keys) for error messages."""
    line = 0
    if isinstance(node, YamlDict) and key is not None:
        line = node.key_lines.get(key, node.line)
    elif isinstance(node, YamlDict | YamlList):
        line = node.line
    return f"{path}:{line}" if line else str(path)
