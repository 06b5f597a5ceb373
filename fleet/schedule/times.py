"""When a schedule runs: its systemd calendar time (OnCalendar=), checked and normalized,
and its randomized delay, a systemd time span."""

from __future__ import annotations

import re
import shutil

from fleet.errors import ConfigError
from fleet.schedule.checks import one_line
from fleet.schedule.tools import run_tool

MAX_DELAY_S = 7 * 86_400


def calendar(at: str) -> tuple[str, list[str]]:
    """OnCalendar= checked and normalized by `systemd-analyze calendar` where it is installed
    ("*-*-* 02:00" -> "*-*-* 02:00:00"); otherwise by fleet's own reading of the common forms."""
    one_line(at, "--at")
    if not at.strip():
        raise ConfigError('--at is empty; give a systemd calendar time such as "*-*-* 02:00"')
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return _normalize(at), [
            f"--at {at!r} was not checked by systemd-analyze (not installed here);"
            " `systemd-analyze calendar` on the target machine checks it"
        ]
    done = run_tool([tool, "calendar", "--", at])
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["not a calendar time"])[-1]
        raise ConfigError(
            f"--at {at!r}: {reason}; give a systemd calendar time such as"
            ' "*-*-* 02:00" (daily at 2), "Mon..Fri 22:30" or "hourly" (man systemd.time)'
        )
    for line in done.stdout.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Normalized form":
            return value.strip(), []
    return at.strip(), []


_SHORTHANDS = {
    "minutely": "*-*-* *:*:00",
    "hourly": "*-*-* *:00:00",
    "daily": "*-*-* 00:00:00",
    "weekly": "Mon *-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00",
    "yearly": "*-01-01 00:00:00",
    "annually": "*-01-01 00:00:00",
}


def _normalize(at: str) -> str:
    """The normalized form of the common calendar times, as systemd-analyze writes them."""
    text = at.strip()
    if text.lower() in _SHORTHANDS:
        return _SHORTHANDS[text.lower()]
    words = text.split()
    weekdays = words.pop(0) if words and words[0][:1].isalpha() else ""
    date = words.pop(0) if words and "-" in words[0] and ":" not in words[0] else "*-*-*"
    time = words.pop(0) if words and ":" in words[0] else "00:00:00"
    if date.count("-") == 1:
        date = f"*-{date}"
    if time.count(":") == 1:
        time = f"{time}:00"
    return " ".join(part for part in (weekdays, date, time, *words) if part)


_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86_400,
    "day": 86_400,
    "days": 86_400,
    "w": 604_800,
    "week": 604_800,
    "weeks": 604_800,
}


def timespan(text: str) -> int:
    """Seconds in a systemd time span: "900", "15min", "1h 30min"."""
    one_line(text, "--randomized-delay")
    spaced = text.strip().lower()
    parts = re.findall(r"(\d+)\s*([a-z]*)", spaced)
    written = re.fullmatch(r"(?:\d+\s*[a-z]*\s*)+", spaced) is not None
    if written and all(unit in _UNITS or not unit for _, unit in parts):
        seconds = sum(int(number) * _UNITS.get(unit, 1) for number, unit in parts)
        if seconds <= MAX_DELAY_S:
            return seconds
    raise ConfigError(
        f"--randomized-delay {text!r}: give a time span of at most 7 days, such as 900,"
        ' "15min" or "1h 30min"'
    )
