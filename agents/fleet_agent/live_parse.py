"""Parsers of what the live readers (``live.py``) read: thermal zones and ``vcgencmd``.

Apart from ``facts_parse.py`` because the pre-flight check (``check.py``) reads temperature
and throttling on the device from the agent's source sent on stdin: it compiles only these few
lines, and imports neither ``re`` nor ``typing`` nor the protocol, where the one-shot facts'
parsers would cost it more than the rest of the check. Pure functions of the text, tested on
real samples (``tests/fixtures/sysinfo``) like those in ``facts_parse.py``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, for check.py's sake
if TYPE_CHECKING:
    from typing import Dict, List, Tuple

    from fleet_agent.protocol import Fact

# vcgencmd get_throttled bits (Raspberry Pi documentation): the low bits are now, bits
# 16..19 the same conditions since boot.
_THROTTLE_BITS = {
    0: "under_voltage_now",
    1: "arm_freq_capped_now",
    2: "throttled_now",
    3: "soft_temp_limit_now",
    16: "under_voltage_since_boot",
    17: "arm_freq_capped_since_boot",
    18: "throttled_since_boot",
    19: "soft_temp_limit_since_boot",
}
# Bits 0..3, the conditions now: all that a case being measured needs to know.
THROTTLE_NOW_MASK = 0xF

# Disabled Tegra sensors read -256 °C; nothing real is outside this range.
_PLAUSIBLE_C = (-40.0, 150.0)


def parse_thermal_zones(zones: List[Tuple[str, str]]) -> Dict[str, float]:
    """(type, temp) text pairs of /sys/class/thermal zones (millidegrees) -> °C per type, the
    hottest where a type repeats; unreadable and implausible readings (disabled sensors) are
    dropped, so that one broken sensor does not hide the others."""
    temps: Dict[str, float] = {}
    for zone_type, temp in zones:
        try:
            celsius = int(temp) / 1000.0
        except ValueError:
            continue
        if not _PLAUSIBLE_C[0] < celsius < _PLAUSIBLE_C[1]:
            continue
        name = zone_type.strip()
        temps[name] = max(celsius, temps.get(name, celsius))
    return temps


def parse_vcgencmd_temp(text: str) -> float:
    """``vcgencmd measure_temp`` prints ``temp=48.3'C``."""
    value, unit, _ = text.partition("temp=")[2].partition("'C")
    try:
        if unit:
            return float(value)
    except ValueError:
        pass
    raise ValueError("not a vcgencmd temperature: {!r}".format(text.strip()))


def parse_vcgencmd_throttled(text: str) -> Dict[str, Fact]:
    """``vcgencmd get_throttled`` (``throttled=0x50005``): the raw bits and each condition."""
    value = (text.partition("throttled=")[2].split() or [""])[0]
    try:
        bits = int(value, 16) if value.startswith("0x") else -1
    except ValueError:
        bits = -1
    if bits < 0:
        raise ValueError("not a vcgencmd throttled value: {!r}".format(text.strip()))
    facts: Dict[str, Fact] = {"throttled_bits": value}
    for bit, name in _THROTTLE_BITS.items():
        facts[name] = bool(bits >> bit & 1)
    return facts
