"""Reading a suite file's nodes: each value checked where it is written, each error one line
naming the file and line (`yamlfile.where`) and what the value should have been."""

from __future__ import annotations

import errno
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from fleet import yamlfile
from fleet.errors import ConfigError

# What a name that becomes part of a path may be: the reference variant's outputs on a
# device are `outputs/<run>/<model>.npy`, and the suite's name is kept with every run.
# Without '/', '..', quotes, spaces or shell characters no name can leave its folder.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
MAX_PATH = 4096


def mapping(path: Path, node: dict[str, Any], key: str) -> dict[str, Any]:
    value = node.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{yamlfile.where(path, node, key)}: '{key}' must be a mapping")
    return value


def no_unknown(path: Path, node: dict[str, Any], known: set[str], what: str) -> None:
    for key in node:
        if key not in known:
            raise ConfigError(
                f"{yamlfile.where(path, node, key)}: unknown key {yamlfile.show(key)} in {what};"
                f" expected one of {', '.join(sorted(known))}"
            )


def in_range(value: object, low: float, high: float, whole: bool) -> bool:
    """A number (not a bool, NaN or infinity) from low to high; an int when `whole`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and (whole or not math.isfinite(value)):
        return False
    return low <= value <= high


def name(path: Path, node: dict[str, Any], key: str, what: str) -> str:
    """A name that becomes part of a file name, here or on a device."""
    value = node.get(key)
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ConfigError(
            f"{yamlfile.where(path, node, key)}: {what} must be {NAME_RULE},"
            f" not {yamlfile.show(value)}"
        )
    return value


def file(path: Path, node: dict[str, Any], key: str) -> Path:
    """Resolve a path relative to the suite file and check it is a file."""
    value = node.get(key)
    where = yamlfile.where(path, node, key)
    if not yamlfile.is_line(value, MAX_PATH):
        raise ConfigError(
            f"{where}: '{key}' must be a file path (text without control characters),"
            f" not {yamlfile.show(value)}"
        )
    # realpath, not Path.resolve: that raises RuntimeError on a symlink loop.
    resolved = Path(os.path.realpath(path.parent / value))
    try:
        mode = resolved.stat().st_mode
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise ConfigError(
                f"{where}: {key} file {yamlfile.show(value)} not found"
                f" (looked at {resolved}; paths are relative to the suite file)"
            ) from None
        raise ConfigError(
            f"{where}: cannot read {key} file {yamlfile.show(value)} ({exc.strerror or exc})"
        ) from None
    if stat.S_ISDIR(mode):
        raise ConfigError(
            f"{where}: {key} {yamlfile.show(value)} is a folder, not a file ({resolved});"
            " name the file inside it"
        )
    if not stat.S_ISREG(mode):
        raise ConfigError(
            f"{where}: {key} {yamlfile.show(value)} is not a regular file ({resolved})"
        )
    return resolved
