"""`fleet results` through click: list, show, compare, push, export."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from servers import InfluxServer, free_port

from fleet.cli.results import results
from fleet.errors import ConfigError
from fleet.results.store import Store


def invoke(store: Store, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(results, [*args, "--store", str(store.path)], env=env)


def test_list_shows_every_run(results_store: Store) -> None:
    result = invoke(results_store, "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].split() == ["run", "suite", "devices", "started", "(UTC)", "results", "exit"]
    assert [line.split()[0] for line in lines[2:]] == [
        "20261120T020000Z-000000",
        "20261121T020000Z-000001",
    ]
    assert all(line.split()[-2:] == ["15", "1"] for line in lines[2:])


def test_show_prints_a_row_per_case(results_store: Store) -> None:
    result = invoke(results_store, "show", "20261120")
    assert result.exit_code == 0, result.output
    title, header, *rows = result.output.splitlines()
    assert title.startswith("run 20261120T020000Z-000000 (smoke, started ")
    assert header.split() == [
        "device", "model", "variant", "runtime", "p50", "ms", "p95", "ms", "peak", "MB",
        "top-1", "drop", "pp", "result",
    ]  # fmt: skip
    assert len(rows) == 15
    # The table `fleet run` printed for the run: a verdict per case, numbers where it has them.
    (timeout,) = [row.split() for row in rows if "TIMEOUT" in row]
    timeout_row = ["pi5-a", "digits_cnn", "tflite:int8-static", "litert/cpu", *["-"] * 5]
    assert timeout == [*timeout_row, "TIMEOUT"]
    failed = [row.split()[:3] for row in rows if row.endswith("FAIL")]
    assert failed == [
        ["lab1", "digits_cnn", "onnx:fp32"],
        ["lab1", "digits_cnn", "tflite:int8-static"],
        ["orin-1", "digits_cnn", "onnx:fp32"],
    ]  # over the 10 ms budget
    assert sum(row.endswith("pass") for row in rows) == 11
    assert rows[0].split()[4:9] == ["18.000", "21.600", "72", "0.9700", "+0.00"]


def test_compare_puts_devices_side_by_side(results_store: Store) -> None:
    result = invoke(results_store, "compare", "--by", "device", "--model", "digits_mlp")
    assert result.exit_code == 0, result.output
    title, header, *rows = result.output.splitlines()
    assert title.startswith("latency_ms_p50 by device for digits_mlp")
    assert header.split()[-3:] == ["lab1", "orin-1", "pi5-a"]
    assert header.split()[:2] == ["model", "variant"]
    by_variant = {row.split()[1]: row.split()[-3:] for row in rows}
    # The latest night (p50 + 0.1) wins each cell.
    assert by_variant == {
        "onnx:fp32": ["6.100", "4.100", "2.100"],
        "onnx:int8-static": ["6.100", "4.100", "2.100"],
    }


def test_compare_shows_status_where_there_are_no_numbers(results_store: Store) -> None:
    result = invoke(results_store, "compare", "--model", "digits_cnn", "--run", "20261120")
    assert result.exit_code == 0, result.output
    (tflite,) = [row for row in result.output.splitlines() if "tflite" in row]
    assert tflite.split()[-1] == "timeout"  # pi5-a, the last column


def test_compare_by_something_that_is_not_a_tag_is_refused(results_store: Store) -> None:
    result = invoke(results_store, "compare", "--by", "color")
    assert result.exit_code == 2
    assert "'color' is not one of" in result.output


def test_push_sends_then_has_nothing_left(
    influxdb_server: InfluxServer, results_store: Store, tmp_path: Path
) -> None:
    env = {"FLEET_INFLUX_URL": influxdb_server.url}
    first = invoke(results_store, "push", "--config", str(tmp_path / "none.toml"), env=env)
    assert isinstance(first.exception, ConfigError)  # a missing --config file is named

    first = invoke(results_store, "push", env=env)
    assert first.exit_code == 0, first.output
    assert first.stdout == "InfluxDB: 50 sent, 0 rejected, 0 spooled\n"
    assert f"InfluxDB: sending 50 record(s) to {influxdb_server.url}" in first.stderr
    again = invoke(results_store, "push", env=env)
    assert again.output == "InfluxDB: 0 sent, 0 rejected, 0 spooled\n"


def test_push_warns_before_a_secret_crosses_the_network_in_clear_text(tmp_path: Path) -> None:
    store = Store(tmp_path / "empty.sqlite")  # nothing to send: no request leaves this machine
    env = {"FLEET_INFLUX_URL": "http://influx.example:8086", "FLEET_INFLUX_TOKEN": "s3cret"}
    result = invoke(store, "push", env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout == "InfluxDB: 0 sent, 0 rejected, 0 spooled\n"
    assert result.stderr == (
        "warning: FLEET_INFLUX_URL (environment): the InfluxDB token goes to influx.example"
        " unencrypted over http://; use an https:// URL\n"
    )
    assert "s3cret" not in result.output


def test_push_to_a_server_that_is_down_exits_2_and_says_why(
    results_store: Store, tmp_path: Path
) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(f'[influx]\nurl = "http://127.0.0.1:{free_port()}"\nretry_total_s = 0.2\n')
    result = invoke(results_store, "push", "--config", str(config))
    assert result.exit_code == 2
    assert result.stdout == "InfluxDB: 0 sent, 0 rejected, 50 spooled\n"
    assert "unreachable" in result.stderr
    assert "fleet results push" in result.stderr


def test_push_without_influxdb_configured_names_the_fix(
    results_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEET_INFLUX_URL", raising=False)
    result = invoke(results_store, "push")
    assert isinstance(result.exception, ConfigError)
    assert "set FLEET_INFLUX_URL" in str(result.exception)


def test_export_writes_the_chosen_format(results_store: Store, tmp_path: Path) -> None:
    out = tmp_path / "junit.xml"
    result = invoke(results_store, "export", "--format", "junit", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("<?xml")
    result = invoke(results_store, "export", "--format", "csv", "--run", "20261121")
    assert result.exit_code == 0
    assert len(result.output.splitlines()) == 16  # header + 15 cases
