"""The habits of people who script their tools: -h, --json on every listing, -v/-q,
environment variables shown in --help, one way to name a run, validation, and the rough edges
of issue 15 (an error said once, "no results" said as it is, a push that says it waits)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from servers import free_port

from fleet import lab as lab_lib
from fleet.cli import main
from fleet.results.store import Store

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "suites" / "smoke.yaml")


def fleet(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, prog_name="fleet")


def fleet_process(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real command, as a script runs it: stdout and stderr apart, environment given."""
    return subprocess.run(
        [sys.executable, "-m", "fleet", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def commands(group: click.Group = main, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name)


ALL = list(commands())


@pytest.mark.parametrize("path", ALL, ids=[" ".join(p) or "fleet" for p in ALL])
def test_every_command_takes_h_and_v_and_q(path: tuple[str, ...]) -> None:
    short, long = fleet(*path, "-h"), fleet(*path, "--help")
    assert short.exit_code == 0, short.output
    assert short.output == long.output
    assert short.output.startswith(f"Usage: {' '.join(('fleet', *path))} ")
    assert "-h, --help" in short.output
    assert "-v, --verbose" in short.output and "-q, --quiet" in short.output


def test_enough_commands_were_walked() -> None:
    """The parametrisation above covers every command, groups' subcommands included."""
    assert {("run",), ("results", "compare"), ("lab", "status"), ("schedule", "list")} <= set(ALL)


# ---- --json on every listing ------------------------------------------------------------


def test_results_list_show_compare_json(results_store: Store) -> None:
    store = ["--store", str(results_store.path)]
    listed = json.loads(fleet("results", "list", "--json", *store).stdout)
    assert listed["store"] == str(results_store.path)
    assert [r["run_id"] for r in listed["runs"]] == [
        "20261120T020000Z-000000",
        "20261121T020000Z-000001",
    ]
    assert all(r["results"] == 15 and r["exit_code"] == 1 for r in listed["runs"])
    assert set(listed["runs"][0]) == {
        "run_id", "suite", "devices", "started_ns", "finished_ns", "exit_code", "results",
    }  # fmt: skip

    shown = json.loads(fleet("results", "show", "--run", "20261120", "--json", *store).stdout)
    assert shown["run"] == listed["runs"][0]
    assert len(shown["results"]) == 15
    (timeout,) = [r for r in shown["results"] if r["fields"]["status"] == "timeout"]
    assert timeout["tags"]["device"] == "pi5-a"

    args = ["results", "compare", "--model", "digits_mlp", "--json", *store]
    compared = json.loads(fleet(*args).stdout)
    assert (compared["metric"], compared["by"], compared["model"]) == (
        "latency_ms_p50",
        "device",
        "digits_mlp",
    )
    cells = {
        row["variant"]["variant"]: {k: v["value"] for k, v in row["cells"].items()}
        for row in compared["rows"]
    }
    # The same latest-night figures the table shows (tests/test_results_cli.py).
    assert cells["onnx:fp32"] == pytest.approx({"lab1": 6.1, "orin-1": 4.1, "pi5-a": 2.1})
    assert compared["rows"][0]["cells"]["lab1"]["run_id"] == "20261121T020000Z-000001"


def test_the_other_listings_json(results_store: Store, tmp_path: Path) -> None:
    store = ["--store", str(results_store.path)]
    pins = json.loads(fleet("baseline", "show", "--json", *store).stdout)
    assert pins == {"store": str(results_store.path), "pins": []}
    assert fleet("baseline", "pin", "--run", "20261120", *store).exit_code == 0
    (pin,) = json.loads(fleet("baseline", "show", "--json", *store).stdout)["pins"]
    assert (pin["suite"], pin["run_id"]) == ("smoke", "20261120T020000Z-000000")

    flagged = json.loads(fleet("results", "regressions", "--all", "--json", *store).stdout)
    assert flagged["since"] == "7d" and isinstance(flagged["regressions"], list)

    units = tmp_path / "units"
    units.mkdir()
    listed = fleet("schedule", "list", "--unit-dir", str(units), "--json")
    assert json.loads(listed.stdout) == {"schedules": []}


def test_convert_json(tmp_path: Path) -> None:
    args = ["convert", str(ROOT / "zoo" / "digits_mlp.onnx"), "--to", "onnx:fp16", "--json"]
    done = fleet_process(*args, env={"FLEET_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    (fp16,) = document["variants"]
    assert (fp16["variant"], fp16["ok"], fp16["card"]["precision"]) == ("onnx:fp16", True, "fp16")
    assert Path(fp16["path"]).is_file() and fp16["path"].endswith(f"{fp16['sha256']}.onnx")


def test_run_plan_json_is_one_document_on_stdout(tmp_path: Path) -> None:
    done = fleet_process("run", SMOKE, "--plan", "--json", env={"FLEET_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert (plan["suite"], plan["cases"]) == ("smoke", 1)
    (local,) = plan["devices"]
    (case,) = local["cases"]
    assert (local["name"], case["id"], case["runtime"]) == (
        "local",
        "digits_mlp/onnx:fp32",
        "onnxruntime",
    )
    assert case["settings"]["provider"] == "cpu" and case["budgets"]["p95_ms"] == 5.0


def test_lab_up_count_and_status_json(tmp_path: Path) -> None:
    folder = tmp_path / "lab"
    up = fleet("lab", "up", "--count", "2", "--dir", str(folder), "--json")
    try:
        assert up.exit_code == 0, up.output
        started = json.loads(up.stdout)
        assert [d["name"] for d in started["devices"]] == ["lab1", "lab2"]
        assert started["inventory"] == str(folder / "inventory.yaml")
        lab_lib.stop_device(lab_lib.load(folder)[1])
        status = json.loads(fleet("lab", "status", "--dir", str(folder), "--json").stdout)
        assert [(d["name"], d["up"]) for d in status["devices"]] == [
            ("lab1", True),
            ("lab2", False),
        ]
        assert status["devices"][0]["port"] == started["devices"][0]["port"]
    finally:
        lab_lib.down(folder)


def test_lab_up_devices_still_works_but_says_count(tmp_path: Path) -> None:
    folder = tmp_path / "lab"
    try:
        up = fleet("lab", "up", "--devices", "1", "--dir", str(folder))
        assert up.exit_code == 0, up.output
        assert "`fleet lab up --devices N` is now `--count N`" in up.stderr
        assert [d.name for d in lab_lib.load(folder)] == ["lab1"]
    finally:
        lab_lib.down(folder)


def test_devices_json(tmp_path: Path) -> None:
    done = fleet_process("devices", "--json", "-q", env={"FLEET_HOME": str(tmp_path)})
    report = json.loads(done.stdout)
    assert [d["device"] for d in report["devices"]] == ["local"]
    assert done.returncode == (0 if report["usable"] else 2)


# ---- -v / -q -----------------------------------------------------------------------------


def test_quiet_run_prints_only_the_result(tmp_path: Path) -> None:
    """A real run on `local`, as a script would start it: -q leaves stdout to the one JSON
    document and stderr to errors (none here)."""
    done = fleet_process("run", SMOKE, "-q", "--json", env={"FLEET_HOME": str(tmp_path)})
    assert done.returncode in (0, 1), done.stderr  # 1: a budget a busy machine broke
    assert done.stderr == ""
    document = json.loads(done.stdout)
    (result,) = document["results"]
    assert result["tags"]["device"] == "local"
    assert document["run"]["exit_code"] == done.returncode
    stored = Store(tmp_path / "results.sqlite").runs()
    assert [r.run_id for r in stored] == [document["run"]["run_id"]]


def test_verbose_says_which_option_came_from_the_environment(results_store: Store) -> None:
    env = {"FLEET_STORE": str(results_store.path)}
    quiet = fleet("results", "list", env=env)
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert f"runs in {results_store.path}" in quiet.stdout  # read when the command ran
    said = fleet("-v", "results", "list", env=env)
    assert said.exit_code == 0, said.output
    assert f"info: --store {results_store.path} (from FLEET_STORE)" in said.stderr
    assert fleet("results", "list", "-v", env=env).stderr == said.stderr  # either place


def test_verbose_and_quiet_together_are_refused() -> None:
    result = fleet("-q", "results", "list", "-v")
    assert result.exit_code == 2
    assert "-v and -q contradict each other" in result.stderr


def test_quiet_hides_warnings_but_not_errors(results_store: Store, tmp_path: Path) -> None:
    env = {"FLEET_INFLUX_URL": "http://influx.example:8086", "FLEET_INFLUX_TOKEN": "s3cret"}
    empty = Store(tmp_path / "empty.sqlite")  # nothing to push: no request leaves
    loud = fleet("results", "push", "--store", str(empty.path), env=env)
    assert "warning: FLEET_INFLUX_URL" in loud.stderr
    quiet = fleet("results", "push", "--store", str(empty.path), "-q", env=env)
    assert quiet.exit_code == 0 and quiet.stderr == ""
    missing = fleet("-q", "results", "show", "--run", "nope", "--store", str(results_store.path))
    assert missing.exit_code == 2
    assert missing.stderr.startswith("error: ") and "no run matching 'nope'" in missing.stderr


# ---- environment variables -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "variables"),
    [
        (("run",), ["FLEET_INVENTORY", "FLEET_DEVICES", "FLEET_STORE", "FLEET_CONFIG"]),
        (("devices",), ["FLEET_INVENTORY", "FLEET_DEVICES"]),
        (("results", "show"), ["FLEET_STORE"]),
        (("results", "push"), ["FLEET_STORE", "FLEET_CONFIG"]),
        (("schedule", "install"), ["FLEET_INVENTORY", "FLEET_DEVICES", "FLEET_STORE"]),
        (("lab", "up"), ["FLEET_LAB_DIR"]),
    ],
)
def test_help_shows_the_environment_variables(path: tuple[str, ...], variables: list[str]) -> None:
    shown = " ".join(fleet(*path, "--help").output.split())  # help wraps lines anywhere
    for variable in variables:
        assert f"env var: {variable}" in shown


def test_devices_and_inventory_from_the_environment(lab: Path, tmp_path: Path) -> None:
    env = {"FLEET_INVENTORY": str(lab / "inventory.yaml"), "FLEET_DEVICES": "lab2"}
    plan = json.loads(fleet("run", SMOKE, "--plan", "--json", env=env).stdout)
    assert [d["name"] for d in plan["devices"]] == ["lab2"]
    given = fleet("run", SMOKE, "--plan", "--json", "--devices", "lab1", env=env)
    assert [d["name"] for d in json.loads(given.stdout)["devices"]] == ["lab1"]  # option wins


def test_schedule_does_not_ask_for_a_variable_it_took(tmp_path: Path) -> None:
    """FLEET_STORE became --store in the unit's command: no "add --env FLEET_STORE"."""
    store = tmp_path / "night.sqlite"
    env = {"FLEET_STORE": str(store), "FLEET_HOME": str(tmp_path / "home")}
    args = ["schedule", "install", SMOKE, "--at", "*-*-* 02:00", "--print"]
    result = fleet(*args, "--unit-dir", str(tmp_path), env=env)
    assert result.exit_code == 0, result.output
    assert f"--store {store}" in result.stdout
    assert "FLEET_STORE" not in result.stderr


# ---- one way to name a run -------------------------------------------------------------


def test_the_run_is_named_by_run_everywhere(results_store: Store, tmp_path: Path) -> None:
    store = ["--store", str(results_store.path)]
    by_option = fleet("results", "show", "--run", "20261120", *store)
    assert by_option.exit_code == 0
    assert by_option.stdout == fleet("results", "show", "20261120", *store).stdout
    csv = ["--format", "csv", *store]
    exported = fleet("results", "export", "20261120", *csv)
    assert exported.stdout == fleet("results", "export", "--run", "20261120", *csv).stdout
    both = fleet("results", "show", "20261120", "--run", "20261121", *store)
    assert both.exit_code == 2 and "two runs named" in both.stderr
    report = tmp_path / "r.md"
    made = fleet("report", "--run", "20261121", "--format", "markdown", "-o", str(report), *store)
    assert made.exit_code == 0, made.output
    assert "20261121T020000Z-000001" in made.stdout
    nothing = fleet("rerun", *store)
    assert nothing.exit_code == 2 and "fleet rerun RUN (or --run RUN)" in nothing.stderr


# ---- validation ------------------------------------------------------------------------


def test_compare_an_unknown_metric_is_one_line_listing_the_metrics(results_store: Store) -> None:
    result = fleet("results", "compare", "--metric", "nonsense", "--store", str(results_store.path))
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: --metric 'nonsense' is not a number these results have;")
    assert "latency_ms_p50" in line and "peak_rss_mb" in line
    assert result.stdout == ""


@pytest.mark.parametrize("value", ["0", "-3"])
@pytest.mark.parametrize("command", [("run", SMOKE), ("devices",)])
def test_parallel_must_be_at_least_one(command: tuple[str, ...], value: str) -> None:
    result = fleet(*command, "--parallel", value)
    assert result.exit_code == 2
    assert "Invalid value for '--parallel'" in result.stderr and "x>=1" in result.stderr


# ---- rough edges -----------------------------------------------------------------------


def test_a_selection_without_an_inventory_says_to_pass_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEET_INVENTORY", raising=False)
    result = fleet("run", SMOKE, "--devices", "lab", "--plan")
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()  # said once
    assert "no device matches 'lab'" in line
    assert "pass --inventory FILE (or set FLEET_INVENTORY)" in line


def test_an_empty_shard_says_there_is_nothing_to_run(tmp_path: Path) -> None:
    result = fleet("run", SMOKE, "--shard", "2/2", env={"FLEET_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert result.stderr == "nothing to run: no device in shard 2/2 has a case of smoke\n"
    assert "(nothing yet)" not in result.output
    assert (
        not (tmp_path / "results.sqlite").exists() or not Store(tmp_path / "results.sqlite").runs()
    )


@pytest.mark.parametrize(
    ("devices", "exit_code", "said"),
    [
        (["lab1"], 130, "no results: 130 interrupted (Ctrl-C) before any case ended"),
        (["lab1"], 2, "no results: the run ended (exit 2) before any case ran"),
        ([], 0, "no results: no device was selected"),
        (["lab1"], None, "no results yet: the run is still going"),
    ],
)
def test_a_run_without_results_says_what_is_true(
    tmp_path: Path, devices: list[str], exit_code: int | None, said: str
) -> None:
    store = Store(tmp_path / "results.sqlite")
    store.start_run("20261201T000000Z-000000", "smoke", devices)
    if exit_code is not None:
        store.finish_run("20261201T000000Z-000000", exit_code)
    result = fleet("results", "show", "--store", str(store.path))
    assert result.exit_code == 0, result.output
    assert said in result.stdout
    assert "(nothing yet)" not in result.stdout


def test_a_device_error_is_said_once_and_a_push_says_where_it_goes(
    lab: Path, tmp_path: Path
) -> None:
    """lab2 is down: the progress names the failure, the reason comes once after the table;
    the InfluxDB that does not answer is named before the push waits for it."""
    lab_lib.stop_device(next(d for d in lab_lib.load(lab) if d.name == "lab2"))
    config = tmp_path / "fleet.toml"
    url = f"http://127.0.0.1:{free_port()}"
    config.write_text(f'[influx]\nurl = "{url}"\nretry_total_s = 0.5\n')
    done = fleet_process(
        "run", SMOKE, "--inventory", str(lab / "inventory.yaml"), "--devices", "lab2",
        "--retries", "0", "--config", str(config), env={"FLEET_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    everything = done.stdout + done.stderr
    assert everything.count("cannot reach") == 1, everything
    assert "error: lab2: cannot reach" in done.stderr
    assert "[lab2] ERROR unreachable" in done.stderr
    sending = re.search(rf"InfluxDB: sending \d+ record\(s\) to {url} \(a server", done.stderr)
    assert sending is not None, done.stderr
    assert sending.start() < done.stderr.index(f"error: InfluxDB at {url} unreachable")


# ---- shell completion -------------------------------------------------------------------


def test_shell_completion_as_docs_cli_md_says() -> None:
    script = subprocess.run(
        ["fleet"], env={**os.environ, "_FLEET_COMPLETE": "bash_source"}, capture_output=True
    )
    assert b"_fleet_completion()" in script.stdout
    assert "_FLEET_COMPLETE=bash_source fleet" in (ROOT / "docs" / "cli.md").read_text()
    env = {**os.environ, "_FLEET_COMPLETE": "bash_complete", "COMP_CWORD": "2"}
    words = subprocess.run(
        ["fleet"], env={**env, "COMP_WORDS": "fleet results sh"}, capture_output=True, text=True
    )
    assert words.stdout.split() == ["plain,show"]
