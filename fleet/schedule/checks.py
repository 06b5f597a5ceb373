"""The checks every value a schedule writes passes, and the paths it resolves."""

from __future__ import annotations

import os
from pathlib import Path

from fleet.errors import ConfigError


def one_line(value: str, what: str) -> str:
    """One line, no control characters: a line break would end the unit's setting."""
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ConfigError(f"{what} {value!r} has a control character (a line break?); remove it")
    return value


def absolute(path: Path, what: str) -> Path:
    text = one_line(str(path), what)
    if text != text.strip():
        raise ConfigError(f"{what} {text!r} begins or ends with a space; rename it")
    return Path(os.path.abspath(Path(text).expanduser()))
