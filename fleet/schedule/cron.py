"""The same run as a crontab line, for machines without systemd."""

from __future__ import annotations

import shlex
from pathlib import Path

from fleet import paths
from fleet.errors import ConfigError
from fleet.schedule.command import Schedule


def crontab_line(schedule: Schedule) -> str:
    """The same run as a crontab line (for `crontab -e`), with a comment line above it.

    The run lock (`--exclusive`, flock(2) on $FLEET_HOME/locks/NAME.lock) is what keeps two
    firings apart; flock(1) around it would take the same file from fleet (which would then
    find its own lock busy) or, on another file, skip without a word. Persistent=true has no
    cron equivalent: a night missed while the machine was off is not run later.
    """
    environment = dict(schedule.environment)
    log_dir = Path(environment.get("FLEET_HOME") or paths.data_dir()) / "logs"
    log = log_dir / f"{schedule.name}.log"
    env_file = shlex.quote(str(schedule.environment_file))
    steps = [
        f"cd {shlex.quote(str(schedule.workdir))}",
        f"mkdir -p {shlex.quote(str(log_dir))}",
        f"if [ -r {env_file} ]; then set -a; . {env_file}; set +a; fi",
    ]
    if schedule.randomized_delay_s:
        steps.append(f'sleep "$(shuf -i 0-{schedule.randomized_delay_s} -n 1)"')
    assignments = " ".join(f"{key}={shlex.quote(value)}" for key, value in environment.items())
    steps.append(f"{assignments} {shlex.join(schedule.argv)} >>{shlex.quote(str(log))} 2>&1")
    # cron turns an unescaped % into a line break, inside quotes too.
    command = " && ".join(steps).replace("%", "\\%")
    return (
        f"# {schedule.description} at {schedule.at} (fleet schedule; log: {log})\n"
        f"{cron_fields(schedule.at)} {command}"
    )


_WEEKDAYS = {"Mon": 1, "Tue": 2, "Wed": 3, "Thu": 4, "Fri": 5, "Sat": 6, "Sun": 7}


def cron_fields(at: str) -> str:
    """The five crontab fields of a normalized calendar time ("Mon..Fri *-*-* 02:00:00" ->
    "0 2 * * 1-5"), or a ConfigError naming what cron cannot say."""
    words = at.split()
    weekdays = words.pop(0) if words and words[0][:1].isalpha() else "*"
    cannot = f"--at {at!r} has no crontab equivalent"
    if len(words) != 2:
        raise ConfigError(f"{cannot} (cron runs in the machine's time zone): drop the zone")
    date, time = words
    if date.count("-") != 2 or time.count(":") != 2 or "~" in date:
        raise ConfigError(f"{cannot}; write it as [WEEKDAYS] *-MONTH-DAY HOUR:MINUTE")
    year, month, day = date.split("-")
    hour, minute, second = time.split(":")
    if year != "*":
        raise ConfigError(f"{cannot}: cron has no year")
    if second not in ("0", "00"):
        raise ConfigError(f"{cannot}: cron starts on the minute, not at second {second}")
    if weekdays != "*" and day != "*":
        raise ConfigError(f"{cannot}: cron runs on the day of the month OR the weekday, not both")
    return " ".join(
        [
            _cron_field(minute, 59, cannot),
            _cron_field(hour, 23, cannot),
            _cron_field(day, 31, cannot),
            _cron_field(month, 12, cannot),
            _cron_weekdays(weekdays, cannot),
        ]
    )


def _cron_field(value: str, largest: int, cannot: str) -> str:
    items = []
    for item in value.split(","):
        first, _, step = item.partition("/")
        low, dots, high = first.partition("..")
        numbers = [low] + ([high] if dots else [])
        if first != "*" and not all(n.isdigit() and int(n) <= largest for n in numbers):
            raise ConfigError(f"{cannot}: {item!r}")
        if step and not step.isdigit():
            raise ConfigError(f"{cannot}: {item!r}")
        if first == "*":
            text = "*"
        elif dots:
            text = f"{int(low)}-{int(high)}"
        elif step:
            text = f"{int(low)}-{largest}"  # systemd's A/S is "from A on", cron's needs a range
        else:
            text = str(int(low))
        items.append(f"{text}/{int(step)}" if step else text)
    return ",".join(items)


def _cron_weekdays(value: str, cannot: str) -> str:
    if value == "*":
        return "*"
    items = []
    for item in value.split(","):
        low, dots, high = item.partition("..")
        names = [low] + ([high] if dots else [])
        if not all(name in _WEEKDAYS for name in names):
            raise ConfigError(f"{cannot}: weekday {item!r}")
        numbers = [_WEEKDAYS[name] for name in names]
        if dots and numbers[0] > numbers[1]:
            raise ConfigError(f"{cannot}: the range {item!r} wraps around the week")
        if dots:
            items.append(f"{numbers[0]}-{numbers[1]}")
        else:
            items.append(str(numbers[0] % 7))
    return ",".join(items)
