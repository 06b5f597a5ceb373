"""Where fleet keeps its files (XDG base directories, overridable with FLEET_*)."""

from __future__ import annotations

import os
from pathlib import Path


def _xdg(fleet_var: str, xdg_var: str, fallback: str) -> Path:
    if value := os.environ.get(fleet_var):
        return Path(value)
    base = os.environ.get(xdg_var) or str(Path.home() / fallback)
    return Path(base) / "fleet"


def data_dir() -> Path:
    """Results and other state worth keeping."""
    return _xdg("FLEET_HOME", "XDG_DATA_HOME", ".local/share")


def cache_dir() -> Path:
    """Converted artifacts, built agents, converter environments: all rebuildable."""
    return _xdg("FLEET_CACHE", "XDG_CACHE_HOME", ".cache")


def default_store() -> Path:
    return data_dir() / "results.sqlite"
