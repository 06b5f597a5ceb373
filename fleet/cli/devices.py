"""`fleet devices`: the pre-flight check of a run, like `ansible -m ping` with facts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fleet.cli import output
from fleet.cli.options import (
    devices_option,
    inventory_option,
    json_option,
    parallel_option,
    select_devices,
    shard_option,
)
from fleet.results.tables import format_table

if TYPE_CHECKING:
    from fleet.preflight import DeviceCheck

COLUMNS = (
    "device",
    "reachable",
    "host key",
    "login",
    "python",
    "numpy",
    "runtimes",
    "agent",
    "free MB",
    "°C",
    "throttled",
    "lock",
    "usable",
)


@click.command()
@inventory_option
@devices_option()
@parallel_option
@shard_option("K/N: only the K-th of N shares of the devices, as `fleet run --shard` splits them.")
@json_option
def devices(
    inventory: Path | None,
    devices: str | None,
    parallel: int | None,
    shard: tuple[int, int] | None,
    as_json: bool,
) -> None:
    """Check that each selected device can take a run now: reachable, host key, login,
    Python and runtimes, agent, disk, temperature, throttling, busy or free. Exit 0 when
    every one is usable, 2 when one is not (a line each says why and what fixes it)."""
    from fleet.preflight import check_devices

    checks = check_devices(select_devices(inventory, devices, shard), parallel)
    usable = all(c.usable for c in checks)
    if as_json:
        output.echo_json({"usable": usable, "devices": [c.as_json() for c in checks]})
    else:
        click.echo(format_table(COLUMNS, [_row(c) for c in checks]))
    for check in checks:
        for warning in check.warnings:
            output.warn(f"{check.device.name}: {warning}")
        for problem in check.problems:
            click.secho(f"{check.device.name}: {problem}", fg="red", err=True)
    unusable = sum(not c.usable for c in checks)
    output.say(f"{len(checks) - unusable} of {len(checks)} device(s) usable")
    sys.exit(0 if usable else 2)


def _yes(value: bool | None, no: str = "no") -> str:
    return "-" if value is None else "yes" if value else no


def _row(check: DeviceCheck) -> list[str]:
    j = check.as_json()
    runtimes = j["runtimes"]
    busy = j["busy"]
    return [
        check.device.name,
        _yes(j["reachable"]),
        "-" if j["host_key"] is None else "ok" if j["host_key"] else "REFUSED",
        "-" if j["login"] is None else "ok" if j["login"] else "REFUSED",
        j["python"] or "-",
        j["numpy"] or ("-" if runtimes is None else "MISSING"),
        "-"
        if runtimes is None
        else " ".join(f"{k} {v}" for k, v in sorted(runtimes.items())) or "NONE",
        j["agent"] or "-",
        "-" if j["free_mb"] is None else f"{j['free_mb']:.0f}",
        "-" if j["temperature_c"] is None else f"{j['temperature_c']:.1f}",
        _yes(j["throttled"]),
        "-" if busy is None else "BUSY" if busy else "free",
        "yes" if check.usable else "NO",
    ]
