"""The plugin's command-line options, read once into `Options`, and the checks of what a test
passes to `fleet_device.run` (measure settings, budgets): bad input is one line naming the
option or argument and the fix, as everywhere in fleet.

Imported only when the plugin is active (an inventory is given).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fleet.errors import ConfigError
from fleet.inventory import Device, Inventory, load_inventory
from fleet.patience import Patience

DEFAULT_SELECTION = "all"  # as `fleet run` with an inventory


@dataclass(frozen=True)
class Options:
    """What the session was asked for; the same on the controller and on every worker."""

    inventory_path: Path
    inventory: Inventory
    selector: str
    devices: tuple[Device, ...]  # the selection, in inventory order
    store_path: Path
    config_path: Path | None
    patience: Patience
    retry_invalid: int
    measure: Mapping[str, Any] = field(default_factory=dict)  # --fleet-measure, wins over all

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.devices]


def read_options(
    inventory: str,
    selector: str | None,
    store: str | None,
    config: str | None,
    wait_s: float,
    retries: int,
    retry_invalid: int,
    measure: Sequence[str],
) -> Options:
    """The options as given; ConfigError naming the option and the fix when one is wrong."""
    from fleet import paths

    path = Path(inventory).expanduser()
    try:
        inv = load_inventory(path)
    except ConfigError as exc:
        raise ConfigError(f"--fleet-inventory: {exc}") from None
    chosen = selector or DEFAULT_SELECTION
    try:
        devices = inv.select(chosen.split(","))
    except ConfigError as exc:
        raise ConfigError(f"--fleet-devices {chosen}: {exc}") from None
    if wait_s < 0 or not math.isfinite(wait_s):
        raise ConfigError(f"--fleet-wait {wait_s:g}: give the seconds to wait for a busy device")
    if retries < 0 or retry_invalid < 0:
        raise ConfigError("--fleet-retries and --fleet-retry-invalid take 0 or more")
    return Options(
        inventory_path=path,
        inventory=inv,
        selector=chosen,
        devices=tuple(devices),
        store_path=Path(store).expanduser() if store else paths.default_store(),
        config_path=Path(config).expanduser() if config else None,
        patience=Patience(retries=retries, wait_s=wait_s),
        retry_invalid=retry_invalid,
        measure=parse_measure_options(measure),
    )


def parse_measure_options(items: Sequence[str]) -> dict[str, Any]:
    """--fleet-measure KEY=VALUE, each value read as YAML (300, 0.5, [32, 96], cpu)."""
    found: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--fleet-measure {item!r}: write KEY=VALUE, e.g. min_iterations=300")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        found[key.strip()] = value
    return check_measure(found, "--fleet-measure")


def check_measure(settings: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Measure settings as a suite's `measure:` takes them: a known key, a value of its type
    in its range. Returns them as given."""
    if not settings:
        return {}
    # Imported here: the suite package brings numpy, which pytest-xdist's controller, which
    # runs no test, would otherwise import only for an empty --fleet-measure.
    from fleet.suite.settings import MEASURE_DEFAULTS, setting_problem

    for key, value in settings.items():
        if key not in MEASURE_DEFAULTS:
            raise ConfigError(
                f"{where}: unknown measure setting {key!r}; expected one of"
                f" {', '.join(sorted(MEASURE_DEFAULTS))}"
            )
        problem = setting_problem(key, value)
        if problem:
            raise ConfigError(f"{where}: {key} must be {problem}, not {value!r}")
    return dict(settings)


def marker_devices(options: Options, selectors: str | Sequence[str]) -> tuple[list[str], str]:
    """The selected devices a `@pytest.mark.fleet(devices=...)` keeps: each selector a group,
    host, tag or device class. Returns (names, why none when empty). A selector that matches
    nothing in the inventory narrows to nothing (a Jetson test on a lab of simulated boards is
    skipped there), unlike --fleet-devices, where it is a usage error."""
    wanted = [selectors] if isinstance(selectors, str) else list(selectors)
    parts = [p.strip() for s in wanted for p in str(s).split(",") if p.strip()]
    inv = options.inventory
    keep = [
        d.name
        for d in options.devices
        if any(
            p in (d.name, d.device_class) or p in d.tags or d.name in inv.groups.get(p, ())
            for p in parts
        )
    ]
    why = "" if keep else f"no selected device ({options.selector}) is {' or '.join(parts) or '-'}"
    return keep, why


def worker_id() -> str:
    """pytest-xdist's worker ("gw0"), or "" when the tests run in one process."""
    return os.environ.get("PYTEST_XDIST_WORKER", "")
