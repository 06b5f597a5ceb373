"""The fault matrix: `fleet run` on a lab device while something breaks in the middle of it.

Each row asserts the exit code, the stored records (every planned case has one: its result,
or an error with the kind that says why; nothing measured is lost) and that no agent or
worker is left on the device (no process naming its work folder, the device lock free).

    fault                                 test
    hung sshd, hung agent                 test_a_hung_device_is_declared_hung_...
    killed sshd mid-case                  test_a_killed_sshd_fails_the_unfinished_cases_...
    killed agent                          test_a_killed_agent_is_named_...
    killed worker                         test_a_killed_worker_fails_its_case_only
    read-only work folder (new, warm)     test_a_read_only_work_folder_is_named_...
    full work folder                      test_a_full_work_folder_is_disk_full_...
    InfluxDB down and up                  test_influxdb_down_mid_run_then_up_...
    two runs at once (refused, waited)    test_a_second_run_on_a_busy_device_..., test_a_busy_...
    SIGINT, SIGTERM (lab and `local`)     test_stopping_the_controller_...
    full store disk                       test_a_run_whose_store_disk_fills_loses_nothing

The small file systems come from tests/disks.py: where this machine cannot mount one, those
rows are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from disks import read_only, small_disk
from faults import (
    CASE_S,
    assert_device_clean,
    case_records,
    device_pids,
    lab1,
    sshd_pids,
    start_run,
    stored,
    suite_file,
    wait_for,
)
from servers import InfluxServer

from fleet.inventory import load_inventory
from fleet.plan import make_plan
from fleet.results.store import Store
from fleet.suite import load_suite

pytestmark = pytest.mark.slow


def mid_case(
    lab: Path, tmp_path: Path, *extra: str, models: int = 1, seconds: float = CASE_S
) -> tuple[subprocess.Popen[str], Path, str]:
    """A run started on lab1, returned once its worker is timing the first case."""
    store = tmp_path / "results.sqlite"
    proc = start_run(suite_file(tmp_path, seconds, models), store, lab, *extra)
    workdir = lab1(lab).workdir
    wait_for(lambda: device_pids(workdir, "worker"), 120, "the worker to start", proc)
    return proc, store, workdir


@pytest.mark.parametrize("device", ["lab1", "local"])
@pytest.mark.parametrize(("number", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stopping_the_controller_stores_the_truth_and_stops_the_device(
    request: pytest.FixtureRequest, tmp_path: Path, device: str, number: int, code: int
) -> None:
    """The case alone would take CASE_S (ten minutes): the run ends well before, so it
    stopped the device rather than waiting for it."""
    store_path = tmp_path / "results.sqlite"
    suite = suite_file(tmp_path, CASE_S)
    if device == "local":  # the built-in device: the agent is a subprocess of the controller
        env = {**os.environ, "FLEET_CACHE": str(tmp_path / "cache")}
        workdir = str(tmp_path / "cache" / "local-device")
        proc = start_run(suite, store_path, None, env=env)
    else:
        lab = request.getfixturevalue("lab")
        workdir = lab1(lab).workdir
        proc = start_run(suite, store_path, lab)
    wait_for(lambda: device_pids(workdir, "worker"), 120, "the worker to start", proc)
    proc.send_signal(number)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, output
    assert "interrupted" in output
    store = Store(store_path)
    (run,) = store.runs()
    assert run.exit_code == code and run.finished_ns is not None  # not 0, not "running"
    assert sorted(r.measurement for r in store.records(run.run_id)) == ["device", "result", "run"]
    assert case_records(store) == {"m1": ("error", "interrupted")}
    assert_device_clean(workdir)


def test_a_killed_agent_is_named_and_leaves_nothing_behind(lab: Path, tmp_path: Path) -> None:
    proc, store_path, workdir = mid_case(lab, tmp_path)
    for pid in device_pids(workdir, "serve"):
        os.kill(pid, signal.SIGKILL)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, output
    assert "the agent was killed by" in output and "numpy" not in output
    assert case_records(Store(store_path)) == {"m1": ("error", "agent_lost")}
    assert_device_clean(workdir, outputs_removed=False)  # the worker saw its agent go


def test_a_killed_worker_fails_its_case_only(lab: Path, tmp_path: Path) -> None:
    proc, store_path, workdir = mid_case(lab, tmp_path, models=2, seconds=10)
    (worker,) = device_pids(workdir, "worker")
    os.kill(worker, signal.SIGKILL)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, output
    store = Store(store_path)
    assert case_records(store) == {"m1": ("error", "error"), "m2": ("ok", None)}  # the next ran
    (killed,) = [r for r in store.records(measurement="result") if r.tags["model"] == "m1"]
    message = str(killed.fields["message"])
    assert "worker killed (SIGKILL) in" in message and "other than the OOM killer" in message
    assert_device_clean(workdir)


@pytest.mark.parametrize("hung", ["agent", "sshd"])
def test_a_hung_device_is_declared_hung_after_its_heartbeats_stop(
    lab: Path, tmp_path: Path, hung: str
) -> None:
    """As a device that hangs (no output, no exit, no close): its agent, or its sshd and
    every session of it, stopped."""
    proc, store_path, workdir = mid_case(lab, tmp_path)
    stopped = device_pids(workdir, "serve") if hung == "agent" else sshd_pids(lab1(lab))
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        output, _ = proc.communicate(timeout=180)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    assert proc.returncode == 2, output
    assert "no word from the agent for 30 s" in output
    assert case_records(Store(store_path)) == {"m1": ("error", "timeout")}
    assert_device_clean(workdir)  # once it runs again, the agent finds its controller gone


def test_a_killed_sshd_fails_the_unfinished_cases_and_keeps_the_measured(
    lab: Path, tmp_path: Path
) -> None:
    """sshd and every session of it killed while the second of three cases is timed: the
    first keeps its result, the other two say the connection was lost; the agent, cut off,
    stops its worker."""
    store_path = tmp_path / "results.sqlite"
    proc = start_run(suite_file(tmp_path, 10.0, models=3), store_path, lab)
    workdir = lab1(lab).workdir
    wait_for(lambda: stored(store_path, "result") == 1, 240, "the first result", proc)
    wait_for(lambda: device_pids(workdir, "worker"), 120, "the second case's worker", proc)
    for pid in sshd_pids(lab1(lab)):
        os.kill(pid, signal.SIGKILL)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, output
    assert "lab1: the connection to the device closed before the agent finished" in output
    store = Store(store_path)
    lost = ("error", "connection_lost")
    assert case_records(store) == {"m1": ("ok", None), "m2": lost, "m3": lost}
    assert not store.records(measurement="retry")  # a measurement is never run again
    (first,) = [r for r in store.records(measurement="result") if r.status == "ok"]
    assert first.number("latency_ms_p50")
    assert_device_clean(workdir)


def test_a_second_run_on_a_busy_device_is_told_who_holds_it(lab: Path, tmp_path: Path) -> None:
    first, _, workdir = mid_case(lab, tmp_path)
    second = tmp_path / "second"
    second.mkdir()
    proc = start_run(suite_file(second, CASE_S), second / "results.sqlite", lab, "--wait", "0")
    output, _ = proc.communicate(timeout=120)
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=60)
    assert proc.returncode == 2, output
    assert "device busy: held by run " in output
    assert case_records(Store(second / "results.sqlite")) == {"m1": ("error", "busy")}
    assert_device_clean(workdir)


def until_busy(proc: subprocess.Popen[str]) -> list[str]:
    """The output of a run up to the line that says its device is busy."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "device busy: held by run " in line:
            return lines
    raise AssertionError("".join(lines))


def test_a_busy_device_is_waited_for_and_the_wait_is_said_and_stored(
    lab: Path, tmp_path: Path
) -> None:
    first, _, workdir = mid_case(lab, tmp_path)
    second = tmp_path / "second"
    second.mkdir()
    proc = start_run(suite_file(second, 1.0), second / "results.sqlite", lab, "--wait", "300")
    said = until_busy(proc)  # the second run waits for the first ...
    first.send_signal(signal.SIGINT)  # ... which then ends, and the second goes on
    first.communicate(timeout=60)
    rest, _ = proc.communicate(timeout=240)
    output = "".join(said) + rest
    assert proc.returncode == 0, output
    assert "--wait" in output
    store = Store(second / "results.sqlite")
    waits = store.records(measurement="retry")
    assert waits and all(w.fields["error_kind"] == "busy" for w in waits)
    assert case_records(store) == {"m1": ("ok", None)}
    assert_device_clean(workdir)


def warm_up(lab: Path, tmp_path: Path) -> None:
    """A run that leaves lab1 with the agent and the model: what a later run finds there."""
    folder = tmp_path / "warm"
    folder.mkdir()
    proc = start_run(suite_file(folder, 0.5, models=2), folder / "results.sqlite", lab)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output


@pytest.mark.parametrize("device", ["new", "warm"])
def test_a_read_only_work_folder_is_named_and_fails_every_case(
    lab: Path, tmp_path: Path, device: str
) -> None:
    """A new device cannot be sent the agent; a warm one's agent cannot take the device
    lock. Either way one line names the device and the folder, nothing is tried again, and
    each case is stored as an error."""
    workdir = lab1(lab).workdir
    if device == "warm":
        warm_up(lab, tmp_path)
    store_path = tmp_path / "results.sqlite"
    with read_only(Path(workdir)):
        proc = start_run(suite_file(tmp_path, 0.5, models=2), store_path, lab)
        output, _ = proc.communicate(timeout=240)
        assert proc.returncode == 2, output
        if device == "new":
            why = f"making the folder {workdir}/cache failed: read-only file system ({workdir})"
        else:
            why = f"agent: cannot open {workdir}/agent.lock: Read-only file system"
        assert f"error: lab1: {why}\n" in output
        store = Store(store_path)
        assert case_records(store) == {"m1": ("error", "error"), "m2": ("error", "error")}
        assert not store.records(measurement="retry")
        assert_device_clean(workdir)


def test_a_full_work_folder_is_disk_full_naming_the_device_and_folder(
    lab: Path, tmp_path: Path
) -> None:
    workdir = Path(lab1(lab).workdir)
    store_path = tmp_path / "results.sqlite"
    with small_disk(workdir, tmp_path / "workdir.img") as disk:
        disk.fill()
        proc = start_run(suite_file(tmp_path, 0.5, models=2), store_path, lab)
        output, _ = proc.communicate(timeout=240)
        assert proc.returncode == 2, output
        # tmpfs makes the folder (no block needed) and refuses the agent; ext2 the folder.
        said = re.search(
            r"error: lab1: no space left on the device: (.*) \(0 bytes free in (.*)\)", output
        )
        assert said, output
        assert said[1].startswith(("sending agent-", "making the folder ")), output
        assert said[2] == str(workdir) and str(workdir) in said[1]
        store = Store(store_path)
        full = ("error", "disk_full")
        assert case_records(store) == {"m1": full, "m2": full}
        assert not store.records(measurement="retry")
        assert_device_clean(str(workdir))


def test_influxdb_down_mid_run_then_up_loses_nothing_and_doubles_nothing(
    lab: Path, tmp_path: Path, influxdb_server: InfluxServer
) -> None:
    """InfluxDB stops while a case is timed and stays down to the end of the run: the run
    ends as it would have (its results in the store, spooled); started again, the next run
    sends what waited with its own, each record once."""
    config = tmp_path / "fleet.toml"
    config.write_text(
        f'[influx]\nurl = "{influxdb_server.url}"\nstream_interval_s = 0.5\nretry_total_s = 1\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_INFLUX_")}
    store_path = tmp_path / "results.sqlite"
    proc = start_run(suite_file(tmp_path, 10.0), store_path, lab, "--config", str(config), env=env)
    workdir = lab1(lab).workdir
    wait_for(lambda: device_pids(workdir, "worker"), 120, "the worker to start", proc)
    influxdb_server.stop()
    assert stored(store_path, "result") == 0, "the case ended before InfluxDB stopped"
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    assert "results stay spooled" in output
    # What was streamed before InfluxDB stopped is sent; the rest, the result with it, waits.
    spooled = re.search(r"InfluxDB: \d+ sent, 0 rejected, ([1-9]\d*) spooled", output)
    assert spooled, output
    store = Store(store_path)
    assert case_records(store) == {"m1": ("ok", None)}
    assert_device_clean(workdir)

    influxdb_server.start()  # same data folder: what was sent before the outage is there
    first = len(store.records())
    proc = start_run(suite_file(tmp_path, 0.5), store_path, lab, "--config", str(config), env=env)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    total = len(store.records())
    sent = re.search(r"InfluxDB: (\d+) sent, 0 rejected, 0 spooled", output)
    assert sent, output
    assert int(sent[1]) == int(spooled[1]) + total - first  # what waited, and the new run's
    for measurement in ("result", "device", "run"):
        records = store.records(measurement=measurement)
        points = influxdb_server.points(measurement)
        assert len(points) == len(records), measurement  # none lost, none twice
        assert {p["time"] for p in points} == {r.time_ns // 10**6 * 10**6 for r in records}
    assert_device_clean(workdir)


def test_a_run_whose_store_disk_fills_loses_nothing(lab: Path, tmp_path: Path) -> None:
    """The store's disk fills as the cases begin: exit 2 with one line saying where the
    results wait, the run closed (not "running"), every measured result read back by
    `fleet results import`, and the device left clean."""
    suite = suite_file(tmp_path, 0.5, models=2, dataset=True)
    spill_dir = tmp_path / "tmpdir"
    spill_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env |= {"FLEET_HOME": str(tmp_path / "home"), "TMPDIR": str(spill_dir)}
    device = load_inventory(lab / "inventory.yaml").select(["lab1"])
    planned = make_plan(load_suite(suite), device).devices[0].cases
    (tmp_path / "disk").mkdir()
    with small_disk(tmp_path / "disk", tmp_path / "disk.img") as disk:
        store = disk.root / "results.sqlite"
        proc = start_run(suite, store, lab, env=env)
        assert proc.stdout is not None
        seen = ""
        while "[lab1] running" not in seen:  # the run is in the store; the agent starts
            line = proc.stdout.readline()
            assert line, f"the run ended before its cases:\n{seen}"
            seen += line
        disk.fill()
        rest, _ = proc.communicate(timeout=300)
        output = seen + rest

        assert proc.returncode == 2, output
        (spill,) = spill_dir.glob("fleet-spill-*.jsonl")
        assert (
            f"error: no space left on device for the store ({store}): " in output
            and f" kept in {spill} ($TMPDIR); free space, then"
            f" `fleet results import {spill} --store {store}`"
            in output
        ), output
        assert "Traceback" not in output
        assert_device_clean(lab1(lab).workdir)

        # The run is closed (exit 2, from the reserve), not "running"; the results spilled.
        disk.free()  # (a store does not open on a full disk: SQLite's shared memory needs room)
        (run,) = Store(store).runs()
        assert run.exit_code == 2 and run.finished_ns is not None
        spilled = [json.loads(line) for line in spill.read_text().splitlines()]
        results = [op for op in spilled if op.get("measurement") == "result"]
        assert len(results) + run.results == len(planned)
        assert all(op["fields"]["latency_ms_p50"] > 0 for op in results)

        # The import puts every measured result in the store, with the run's own exit code.
        argv = [sys.executable, "-m", "fleet", "results", "import", str(spill)]
        imported = subprocess.run(
            [*argv, "--store", str(store)], env=env, capture_output=True, text=True, timeout=120
        )
        assert imported.returncode == 0, imported.stderr
        records = sum(op["op"] == "record" for op in spilled)
        assert imported.stdout.startswith(f"{records} record(s) from {spill} into {store} (0 ")
        reopened = Store(store)
        (run,) = reopened.runs()
        assert run.exit_code in (0, 1) and run.results == len(planned)
        assert case_records(reopened) == {"m1": ("ok", None), "m2": ("ok", None)}
        assert all(r.number("latency_ms_p50") for r in reopened.records(run.run_id, "result"))
        assert reopened.records(run.run_id, "run")  # the summary too
