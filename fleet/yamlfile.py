"""YAML loading that remembers line numbers, so errors can name file and line.

Suites, inventories and fleet.toml are all read here, so the limits that keep a broken or
hostile file from taking the controller down live in one place: the size of a file, how
deep it nests, how far its aliases expand (a 700-byte "billion laughs" suite would otherwise
expand to gigabytes in whatever walks it), and duplicate keys (which YAML lets the last one
win silently). Each breach is a one-line ConfigError naming file and line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeGuard, cast

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from fleet.errors import ConfigError

# A suite is a few kilobytes and an inventory of 512 devices about 50 KB; PyYAML reads
# about 200 KB/s, so this cap (some 15,000 hosts in one file) bounds a parse to seconds.
MAX_BYTES = 1024 * 1024
# Nesting, counted through aliases: real files nest 5-6 levels; code that walks the values
# (repr, json) recurses once per level and must stay far from Python's recursion limit.
MAX_DEPTH = 64
# Nodes that aliases add when expanded: a shared `measure:` block or group vars are a few
# dozen; a billion-laughs bomb reaches this within its first few aliases.
MAX_ALIAS_NODES = 10_000
# How much of a user's value an error message shows.
SHOWN_CHARS = 60
# Characters that end or hide a line (C0, DEL, C1, Unicode line breaks): never part of a
# name, path or setting, since each ends up in a message, a header or a command.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class YamlDict(dict[str, Any]):
    """A mapping from a YAML file; knows its own line and the line of each key."""

    line: int = 0
    key_lines: dict[str, int]


class YamlList(list[Any]):
    line: int = 0


class _Loader(yaml.SafeLoader):
    """SafeLoader that counts, while composing, how deep and how large the document is once
    every alias is expanded, so a bomb is refused before anything is built from it."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliased = 0
        # id(node) -> (nodes, levels) of that node with its aliases expanded; a node that is
        # not here yet is still being composed.
        self._extent: dict[int, tuple[int, int]] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        mark = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            node = cast(yaml.Node, super().compose_node(parent, index))
            extent = self._extent.get(id(node))
            if extent is None:
                raise ComposerError(
                    None,
                    None,
                    f"alias *{event.anchor} is used inside its own anchor; that never ends",
                    mark,
                )
            self._aliased += extent[0]
            if self._aliased > MAX_ALIAS_NODES:
                raise ComposerError(
                    None,
                    None,
                    f"aliases expand to more than {MAX_ALIAS_NODES} values; write the values"
                    " out instead of nesting aliases",
                    mark,
                )
            return node
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            node = cast(yaml.Node, super().compose_node(parent, index))
        finally:
            self._depth -= 1
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        extents = [self._extent[id(child)] for child in children]
        levels = 1 + max((e[1] for e in extents), default=0)
        if levels > MAX_DEPTH:
            raise ComposerError(
                None,
                None,
                f"nested deeper than {MAX_DEPTH} levels once its aliases are expanded",
                mark,
            )
        self._extent[id(node)] = (1 + sum(e[0] for e in extents), levels)
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """A value PyYAML cannot build (a 31 February, `!!int 0x`, a 5000-digit number)
        raises ValueError, KeyError... without a line: give it the node's line."""
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:
            raise ConstructorError(
                None, None, f"cannot read this value ({_first_line(exc)})", node.start_mark
            ) from exc


def _mapping(loader: _Loader, node: yaml.MappingNode) -> YamlDict:
    result = YamlDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise ConstructorError(
                None, None, "a key must be a plain word, not a list or mapping", key_node.start_mark
            )
        # The key as written: `on:` stays "on" and `1.0:` stays "1.0", not True and "1.0".
        key = str(key_node.value)
        line = key_node.start_mark.line + 1
        if key in result:
            raise ConstructorError(
                None,
                None,
                f"key {show(key)} appears twice (first on line {result.key_lines[key]}); keep one",
                key_node.start_mark,
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
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
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except ValueError:  # a NUL in the path
        raise ConfigError(f"{str(path)!r}: cannot read (not a path)") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(
            f"{path}: larger than {MAX_BYTES // 2**20} MiB; a configuration file is a few"
            " kilobytes, is this the right file?"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    # As text mode would: line numbers then agree with what editors show.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def load(path: Path) -> Any:
    """Parse a YAML file; a syntax error becomes a ConfigError naming file and line."""
    text = read_text(path)
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = _one_line(str(exc.problem or exc.context or "cannot parse this"))
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as exc:  # a control character: marked by position only
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        raise ConfigError(
            f"{path}:{line}: invalid YAML: unacceptable character #x{exc.character:04x}:"
            f" {exc.reason}; remove it"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {_one_line(str(exc))}") from None


def where(path: Path, node: Any, key: str | None = None) -> str:
    """`file:line` of a node (or of one of its keys) for error messages."""
    line = 0
    if isinstance(node, YamlDict) and key is not None:
        line = node.key_lines.get(key, node.line)
    elif isinstance(node, YamlDict | YamlList):
        line = node.line
    return f"{path}:{line}" if line else str(path)


def is_line(value: object, limit: int) -> TypeGuard[str]:
    """Whether `value` is text of 1 to `limit` characters with no control character."""
    return isinstance(value, str) and 0 < len(value) <= limit and not _CONTROL.search(value)


def show(value: object) -> str:
    """A user's value in an error message: its repr (one line, escapes shown), cut short."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(exc: BaseException) -> str:
    return _one_line(f"{type(exc).__name__}: {exc}", 120)
