"""fleet's pytest plugin: hardware tests that run on every selected device of an inventory.

Installed as a `pytest11` entry point and inactive unless given an inventory
(`--fleet-inventory` or FLEET_INVENTORY): then every test that takes the `fleet_device`
fixture runs once per selected device (`--fleet-devices`, the selector of `fleet run`; test
ids are device names), narrowed per test by `@pytest.mark.fleet(devices=...)`. Under
pytest-xdist (`-n N`) the tests are grouped by device (`--dist loadgroup`, set here), so one
worker drives a device at a time. Results go to the store (`--fleet-store`) with the test's
node id, into the JUnit report (`record_property`), and to InfluxDB (fleet.toml /
FLEET_INFLUX_*) as the session goes and at its end, as `fleet run` sends them. docs/pytest.md.

This module is imported by every pytest run where fleet is installed, so it imports only
pytest and the standard library at the top; the rest loads once an inventory is given.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from fleet.pytest_plugin.device import FleetDevice
    from fleet.pytest_plugin.options import Options
    from fleet.pytest_plugin.session import FleetSession
    from fleet.results.stream import Stream

_OPTIONS: pytest.StashKey[Options] = pytest.StashKey()
_SESSION: pytest.StashKey[FleetSession] = pytest.StashKey()
_STREAM: pytest.StashKey[Stream] = pytest.StashKey()
_SUMMARY: pytest.StashKey[dict[str, Any]] = pytest.StashKey()
# What xdist may distribute by: each but "each" is turned into grouping by device.
_REGROUPED = ("load", "loadscope", "loadfile", "worksteal")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
# The results the tests attached to their reports (JUnit properties), seen by this process.
_COUNTED: list[dict[str, Any]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fleet", "fleet: tests on the devices of an inventory (docs/pytest.md)")
    group.addoption(
        "--fleet-inventory",
        metavar="PATH",
        help="Inventory file or folder; turns the plugin on (default: $FLEET_INVENTORY).",
    )
    group.addoption(
        "--fleet-devices",
        metavar="SEL",
        help="Comma-separated groups, hosts or tags, as `fleet run --devices` (default: all).",
    )
    group.addoption(
        "--fleet-store",
        metavar="PATH",
        help="SQLite results store (default: $FLEET_HOME/results.sqlite, as `fleet run`).",
    )
    group.addoption(
        "--fleet-config",
        metavar="PATH",
        help="fleet.toml with the InfluxDB settings (default: ./fleet.toml); FLEET_INFLUX_*"
        " variables override it.",
    )
    group.addoption(
        "--fleet-wait",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="Wait this long for a device another run holds (default: 600, as `fleet run`).",
    )
    group.addoption(
        "--fleet-retries",
        type=int,
        default=3,
        metavar="N",
        help="Connection retries before any case started (default: 3, as `fleet run`).",
    )
    group.addoption(
        "--fleet-retry-invalid",
        type=int,
        default=0,
        metavar="N",
        help="Run a case whose result is not valid (noisy, throttled) up to N more times"
        " before the test fails on it (default: 0).",
    )
    group.addoption(
        "--fleet-measure",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="A measure setting for every run, over the tests' own (min_iterations=100).",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "fleet(devices=SEL, suite=NAME): run this test on the selected devices in these groups,"
        " hosts, tags or device classes only; store its results under suite NAME",
    )
    inventory = config.getoption("fleet_inventory") or os.environ.get("FLEET_INVENTORY")
    if not inventory:
        for flag in ("fleet_devices", "fleet_store", "fleet_config"):
            if config.getoption(flag):
                option = "--" + flag.replace("_", "-")
                raise pytest.UsageError(f"{option} needs an inventory: --fleet-inventory PATH")
        return
    from fleet.errors import ConfigError
    from fleet.pytest_plugin.options import read_options

    try:
        options = read_options(
            inventory,
            config.getoption("fleet_devices"),
            config.getoption("fleet_store"),
            config.getoption("fleet_config"),
            config.getoption("fleet_wait"),
            config.getoption("fleet_retries"),
            config.getoption("fleet_retry_invalid"),
            config.getoption("fleet_measure"),
        )
    except ConfigError as exc:
        raise pytest.UsageError(f"fleet: {exc}") from None
    config.stash[_OPTIONS] = options
    _COUNTED.clear()
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and workerinput.get("fleet_loadgroup"):
        # A worker parses the command line again, without the --dist the controller chose.
        config.option.loadgroup = True
    config.stash[_SUMMARY] = {"lines": []}  # what the fleet section at the end says
    if config.getoption("numprocesses", None):
        dist = config.getoption("dist", "no")
        if dist == "each":
            raise pytest.UsageError(
                "fleet: --dist each would run every test on every device once per worker;"
                " leave --dist out (the plugin groups tests by device)"
            )
        if dist in _REGROUPED:
            config.option.dist = "loadgroup"  # one worker per device at a time


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist, on the controller: tell each worker to group by device, as it does."""
    if node.config.getoption("dist", "no") == "loadgroup":
        node.workerinput["fleet_loadgroup"] = True


def pytest_sessionstart(session: pytest.Session) -> None:
    """On the controller (or the only process): stream results to InfluxDB while the
    tests run, as `fleet run` does."""
    config = session.config
    options = config.stash.get(_OPTIONS, None)
    if options is None or hasattr(config, "workerinput"):
        return
    from fleet.config import load_config
    from fleet.errors import ConfigError

    try:
        loaded = load_config(options.config_path)
    except ConfigError as exc:
        raise pytest.UsageError(f"fleet: {exc}") from None
    summary = config.stash[_SUMMARY]
    summary["lines"] += [f"warning: {w}" for w in loaded.warnings]
    if loaded.influx is None:
        return
    from fleet.results.stream import Stream  # the InfluxDB client: a second of imports

    summary["influx"] = loaded.influx.url
    stream = Stream(_session(config).store, loaded.influx, say=summary["lines"].append)
    stream.start()
    config.stash[_STREAM] = stream


def pytest_report_header(config: pytest.Config) -> list[str]:
    options = config.stash.get(_OPTIONS, None)
    if options is None:
        return []
    lines = [
        f"fleet: {len(options.devices)} device(s) of {options.inventory_path}"
        f" (--fleet-devices {options.selector}): {', '.join(options.names)}",
        f"fleet: results to {options.store_path}",
    ]
    if config.getoption("dist", "no") == "loadgroup":
        lines.append("fleet: --dist loadgroup: each device's tests on one worker at a time")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "fleet_device" not in metafunc.fixturenames:
        return
    options = metafunc.config.stash.get(_OPTIONS, None)
    if options is None:
        if hasattr(metafunc.config, "workerinput"):
            # An xdist worker cannot stop the session with a usage error; a collection error
            # with the same words stops it cleanly. One process: pytest_collection_modifyitems.
            pytest.fail(_no_inventory(metafunc.definition.nodeid), pytrace=False)
        return
    from fleet.pytest_plugin.options import marker_devices

    names, why = options.names, ""
    marker = metafunc.definition.get_closest_marker("fleet")
    if marker is not None and (marker.args or "devices" in marker.kwargs):
        names, why = marker_devices(options, marker.kwargs.get("devices", marker.args))
    # Under pytest-xdist, each device is a group: all its tests go to one worker.
    xdist = metafunc.config.pluginmanager.hasplugin("xdist")
    group = pytest.mark.xdist_group if xdist else None
    params = [pytest.param(n, id=n, marks=[group(n)] if group else []) for n in names]
    if not params:
        params = [
            pytest.param(None, id="no-device", marks=pytest.mark.skip(reason=f"fleet: {why}"))
        ]
    metafunc.parametrize("fleet_device", params, indirect=True)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.stash.get(_OPTIONS, None) is not None:
        return
    users = [item.nodeid for item in items if "fleet_device" in getattr(item, "fixturenames", ())]
    if users:
        raise pytest.UsageError(_no_inventory(users[0], len(users)))


def _no_inventory(test: str, count: int = 1) -> str:
    who = f"{test} and {count - 1} more test(s) take" if count > 1 else f"{test} takes"
    return (
        f"fleet: {who} fleet_device, but no inventory was given: pass --fleet-inventory PATH"
        " (or set FLEET_INVENTORY), e.g. the inventory.yaml of `fleet lab up`"
    )


@pytest.fixture
def fleet_device(request: pytest.FixtureRequest, record_property: Any) -> FleetDevice:
    """The device this instance of the test runs on: `.run(model, variant=..., ...)`,
    `.run_case(suite, model, variant)`, `.facts`, `.name`, `.device_class`, `.tags`."""
    from fleet.pytest_plugin.device import FleetDevice

    name = getattr(request, "param", None)
    if request.config.stash.get(_OPTIONS, None) is None or name is None:
        raise pytest.UsageError("fleet: fleet_device needs --fleet-inventory PATH")
    node = request.node
    test = node.nodeid.removesuffix(f"@{name}")  # xdist's loadgroup appends the group
    marker = node.get_closest_marker("fleet")
    suite = marker.kwargs.get("suite") if marker is not None else None
    return FleetDevice(
        _session(request.config),
        name,
        test=test,
        test_path=request.path,
        suite_name=suite or _suite_name(request.path.stem, node),
        record_property=record_property,
    )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """On the controller: count the results the tests attached (JUnit properties)."""
    if report.when != "teardown":
        return
    for name, value in report.user_properties:
        if name == "fleet_result" and isinstance(value, str):
            _COUNTED.append(json.loads(value))


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    stream = config.stash.get(_STREAM, None)
    if stream is not None:
        report = stream.push_rest()  # what is left; a failed push leaves it spooled
        if report is not None:
            config.stash[_SUMMARY]["lines"] += report.lines()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    options = config.stash.get(_OPTIONS, None)
    if options is None or hasattr(config, "workerinput"):
        return
    summary = config.stash[_SUMMARY]
    devices = {r["device"] for r in _COUNTED}
    invalid = sum(1 for r in _COUNTED if not r.get("valid", True))
    write = terminalreporter.write_line
    terminalreporter.section("fleet")
    write(
        f"{len(_COUNTED)} result(s) from {len(devices)} device(s), {invalid} not valid, stored"
        f" in {options.store_path} with each test's node id (field `test`)"
    )
    if "influx" not in summary:
        write("InfluxDB: none configured (fleet.toml [influx] url, or FLEET_INFLUX_URL)")
    for line in summary["lines"]:
        write(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is not None:
        session.close()


def pytest_assertrepr_compare(op: str, left: object, right: object) -> list[str] | None:
    """`assert result.latency.p95_ms < 20`: say the device, case, value and its uncertainty,
    and the limit, when a measured figure is compared."""
    if type(left).__name__ != "Value" and type(right).__name__ != "Value":
        return None
    from fleet.pytest_plugin.result import explain

    return explain(op, left, right)


def _session(config: pytest.Config) -> FleetSession:
    session = config.stash.get(_SESSION, None)
    if session is None:
        from fleet.pytest_plugin.session import FleetSession

        session = FleetSession(config.stash[_OPTIONS])
        config.stash[_SESSION] = session
    return session


def _suite_name(module: str, node: Any) -> str:
    """The suite a test's own runs are stored under: module.Class.test, as a fleet name."""
    cls = getattr(node, "cls", None)
    parts = [module, *([cls.__name__] if cls is not None else []), node.originalname]
    name = _NAME_CHARS.sub("-", ".".join(parts)).strip("-.") or "pytest"
    if len(name) > 64:  # a suite name is at most 64 characters: keep it unique with a hash
        name = f"{name[:55]}-{zlib.crc32(name.encode()):08x}"
    return name
