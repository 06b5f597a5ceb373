"""A Jetson while a repetition runs: ``tegrastats`` every ``INTERVAL_MS``, from before the
model loads until the watch stops, the timed phase's lines summarised into result fields.

GPU (GR3D) and memory controller (EMC) load, the hottest sensor and the board's input power
come from ``facts_parse.parse_tegrastats``, which reads every JetPack format (4 to 6). The
Jetson throttles its clocks when a sensor reaches a trip point of its thermal zone: the
passive (or hot) trip points are read once from sysfs, and a timed phase whose sensor reached
one is reported as throttled, as CPU throttling is.
"""

import os
import re
import threading
from typing import Any, Dict, List, Optional, Tuple

from fleet_agent import live
from fleet_agent.facts_parse import parse_tegrastats
from fleet_agent.protocol import Fact
from fleet_agent.toolstream import ToolStream

INTERVAL_MS = 500
# PMIC reads a fixed 100 °C on several boards (no sensor behind it); "thermal" is the
# estimate the fan uses, an average of the others.
_NOT_SENSORS = ("pmic", "thermal")
# The rails that measure the whole module's input; boards without one (AGX Xavier, AGX
# Orin) report the module's rails apart, and their sum is its power.
_INPUT_RAILS = ("vdd_in", "pom_5v_in")
# Disabled sensors read -256 °C (as in sysfs, live_parse._PLAUSIBLE_C).
_PLAUSIBLE_C = (-40.0, 150.0)
_THERMAL_ROOT = "/sys/class/thermal"


def sensor_name(name: str) -> str:
    """A thermal zone's type or a tegrastats sensor as one name: "CPU-therm", "cpu-thermal"
    and tegrastats' "CPU" or "cpu" are all "cpu"."""
    return re.sub(r"-therm(al)?$", "", name.strip().lower())


def temperatures(facts: Dict[str, Fact]) -> Dict[str, float]:
    """Sensor -> °C of a parsed tegrastats line, without the readings that are not sensors
    and those of disabled ones."""
    temps: Dict[str, float] = {}
    for key, value in facts.items():
        match = re.fullmatch(r"temp_(\w+)_c", key)
        if match is None or not isinstance(value, float):
            continue
        name = sensor_name(match.group(1))
        if name not in _NOT_SENSORS and _PLAUSIBLE_C[0] < value < _PLAUSIBLE_C[1]:
            temps[name] = value
    return temps


def input_power_mw(facts: Dict[str, Fact]) -> Optional[float]:
    """The board's input power now: its input rail, else the sum of its rails."""
    rails = {k[len("power_") : -len("_mw")]: v for k, v in facts.items() if k.startswith("power_")}
    for rail in _INPUT_RAILS:
        value = rails.get(rail)
        if isinstance(value, float):
            return value
    values = [v for v in rails.values() if isinstance(v, float)]
    return sum(values) if values else None


def summarise(lines: List[str], trips: Dict[str, float]) -> Dict[str, Any]:
    """Result fields from the tegrastats lines of a timed phase, and the sensors that reached
    a trip point (``tegra_throttled``, ``tegra_throttle_sensors``: comma-separated)."""
    parsed = [parse_tegrastats(line) for line in lines]
    parsed = [p for p in parsed if p]
    if not parsed:
        return {}
    fields: Dict[str, Any] = {}
    for key, name in (
        ("gpu_load_pct", "tegra_gpu_load_mean"),
        ("emc_load_pct", "tegra_emc_load_mean"),
    ):
        values = [v for v in (p.get(key) for p in parsed) if isinstance(v, float)]
        if values:
            fields[name] = sum(values) / len(values)
    hottest: Dict[str, float] = {}
    for facts in parsed:
        for sensor, celsius in temperatures(facts).items():
            hottest[sensor] = max(celsius, hottest.get(sensor, celsius))
    if hottest:
        fields["tegra_temp_max_c"] = max(hottest.values())
    power = [w for w in (input_power_mw(p) for p in parsed) if w is not None]
    if power:
        fields["tegra_power_mw_mean"] = sum(power) / len(power)
    reached = sorted(s for s, c in hottest.items() if s in trips and c >= trips[s])
    fields["tegra_throttle_sensors"] = ",".join(
        "{} {:g} °C (trip {:g} °C)".format(s, hottest[s], trips[s]) for s in reached
    )
    return fields


def parse_trip_points(zones: List[Tuple[str, List[Tuple[str, str]]]]) -> Dict[str, float]:
    """Sensor -> °C of its lowest passive or hot trip point, from each thermal zone's type
    and its (trip type, temperature in m°C) pairs; zones without one are left out."""
    trips: Dict[str, float] = {}
    for zone_type, points in zones:
        temps = []
        for kind, temp in points:
            try:
                celsius = int(temp) / 1000.0
            except ValueError:
                continue
            if kind.strip() in ("passive", "hot") and celsius > 0:
                temps.append(celsius)
        if temps:
            name = sensor_name(zone_type)
            trips[name] = min([*temps, trips.get(name, min(temps))])
    return trips


def read_trip_points(root: str) -> Dict[str, float]:
    """``parse_trip_points`` of the thermal zones under ``root``; empty where unreadable."""
    zones = []
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return {}
    for entry in entries:
        folder = os.path.join(root, entry)
        try:
            zone_type = live.read_text(os.path.join(folder, "type"))
            names = os.listdir(folder)
        except OSError:
            continue
        points = []
        for name in names:
            match = re.fullmatch(r"trip_point_(\d+)_type", name)
            if match is None:
                continue
            try:
                kind = live.read_text(os.path.join(folder, name))
                temp = live.read_text(
                    os.path.join(folder, "trip_point_{}_temp".format(match.group(1)))
                )
            except OSError:
                continue
            points.append((kind, temp))
        zones.append((zone_type, points))
    return parse_trip_points(zones)


class Watch:
    """tegrastats lines by phase; only the timed phase's make the fields."""

    def __init__(self) -> None:
        self._phase = "baseline"
        self._timed: List[str] = []
        self._lock = threading.Lock()
        self._trips = read_trip_points(_THERMAL_ROOT)
        self._stream = ToolStream(["tegrastats", "--interval", str(INTERVAL_MS)], self._on_line)

    def _on_line(self, line: str) -> None:
        with self._lock:
            if self._phase == "timed":
                self._timed.append(line)

    def phase(self, name: str) -> None:
        with self._lock:
            self._phase = name

    def stop(self) -> None:
        self._stream.stop()

    def fields(self) -> Dict[str, Any]:
        with self._lock:
            lines = list(self._timed)
        return summarise(lines, self._trips)


def start() -> Optional[Watch]:
    """A tegrastats watch where tegrastats is installed (a Jetson), else None."""
    try:
        return Watch()
    except OSError:
        return None
