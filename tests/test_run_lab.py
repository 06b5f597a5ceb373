"""End to end through the CLI on a lab of real sshd devices: no mock of SSH anywhere."""

from __future__ import annotations

import dataclasses
import getpass
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from fleet import lab as lab_lib
from fleet.cli import main
from fleet.errors import DeviceError
from fleet.inventory import load_inventory
from fleet.results.export import export
from fleet.results.store import Store
from fleet.transport import connect

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "suites" / "smoke.yaml"

pytestmark = pytest.mark.slow


def smoke_suite(folder: Path) -> str:
    """suites/smoke.yaml as it ships, less its latency budget: a p95 under 5 ms is a timing
    figure that a busy machine can miss, and these tests are about the run, not its speed
    (the budgets themselves are tested in test_suite.py and test_export.py)."""
    suite = yaml.safe_load(SMOKE.read_text())
    for model in suite["models"]:
        for key in ("path", "dataset", "calibration"):
            if key in model:
                model[key] = str((SMOKE.parent / model[key]).resolve())
    del suite["budgets"]["p95_ms"]
    path = folder / "smoke.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return str(path)


def run(lab: Path, store: Path, devices: str = "lab") -> tuple[int, str]:
    result = CliRunner().invoke(
        main,
        [
            "run",
            smoke_suite(store.parent),
            "--inventory",
            str(lab / "inventory.yaml"),
            "--devices",
            devices,
            "--store",
            str(store),
        ],
    )
    return result.exit_code, result.output


def test_smoke_suite_on_three_lab_devices(lab: Path, tmp_path: Path) -> None:
    code, output = run(lab, tmp_path / "results.sqlite")
    assert code == 0, output
    table = [line for line in output.splitlines() if line.startswith("lab")]
    assert [line.split()[0] for line in table] == ["lab1", "lab2", "lab3"]
    assert all(line.split()[9] == "pass" for line in table), output

    store = Store(tmp_path / "results.sqlite")
    (run_info,) = store.runs()
    assert run_info.exit_code == 0
    results = store.records(run_info.run_id, "result")
    assert sorted(r.tags["device"] for r in results) == ["lab1", "lab2", "lab3"]
    for record in results:
        assert record.tags["device_class"] == "lab"
        assert record.tags["runtime"] == "onnxruntime" and record.tags["provider"] == "cpu"
        f = record.fields
        assert 0 < f["latency_ms_p50"] <= f["latency_ms_p95"] <= f["latency_ms_p99"]
        assert f["iterations"] >= 300
        assert f["peak_rss_mb"] >= f["rss_after_load_mb"] > 0
        assert f["load_ms"] > 0
        assert f["accuracy_top1"] > 0.95
        assert f["passed"] is True and f["run_id"] == run_info.run_id
    for device in lab_lib.load(lab):  # the FP32 outputs were for this run's comparisons only
        assert (Path(device.workdir) / "outputs").is_dir()
        assert not (Path(device.workdir) / "outputs" / run_info.run_id).exists()
    facts = store.records(run_info.run_id, "device")
    assert {r.tags["device"] for r in facts} == {"lab1", "lab2", "lab3"}
    assert all(r.tags["arch"] not in ("", "unknown") for r in facts)


def test_second_run_sends_nothing_again(lab: Path, tmp_path: Path) -> None:
    assert run(lab, tmp_path / "a.sqlite", "lab1")[0] == 0
    code, output = run(lab, tmp_path / "b.sqlite", "lab1")
    assert code == 0, output
    assert "push" not in output  # agent, model and data set are already on the device


def test_changed_host_key_is_refused_and_nothing_runs_there(lab: Path, tmp_path: Path) -> None:
    lab2 = next(d for d in lab_lib.load(lab) if d.name == "lab2")
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = (lab / "known_hosts").read_text().splitlines()
    forged = other.with_suffix(".pub").read_text().split()[:2]
    known = [
        f"[{lab2.address}]:{lab2.port} {' '.join(forged)}" if f"]:{lab2.port} " in line else line
        for line in known
    ]
    (lab / "known_hosts").write_text("\n".join(known) + "\n")

    code, output = run(lab, tmp_path / "results.sqlite")
    assert code == 2, output
    assert "lab2: host key of" in output and "CHANGED" in output and "ssh-keygen -R" in output
    results = Store(tmp_path / "results.sqlite").records(measurement="result")
    assert sorted(r.tags["device"] for r in results if r.status == "ok") == ["lab1", "lab3"]
    # The device that failed is data: its case is stored as an error with its kind.
    (failed,) = [r for r in results if r.tags["device"] == "lab2"]
    assert (failed.status, failed.fields["error_kind"]) == ("error", "host_key")
    assert "CHANGED" in str(failed.fields["message"])
    assert not list(Path(lab2.workdir).iterdir())  # no agent, model or job reached lab2


def test_unknown_host_key_is_refused(lab: Path, tmp_path: Path) -> None:
    (lab / "known_hosts").write_text("")
    code, output = run(lab, tmp_path / "results.sqlite", "lab1")
    assert code == 2
    assert "unknown host key SHA256:" in output and "ssh-keyscan" in output


def test_device_with_stopped_sshd_is_reported_and_others_finish(lab: Path, tmp_path: Path) -> None:
    lab3 = next(d for d in lab_lib.load(lab) if d.name == "lab3")
    lab_lib.stop_device(lab3)

    code, output = run(lab, tmp_path / "results.sqlite")
    assert code == 2
    assert f"lab3: cannot reach {lab3.address}:{lab3.port}" in output
    store = Store(tmp_path / "results.sqlite")
    results = store.records(measurement="result")
    assert sorted(r.tags["device"] for r in results if r.status == "ok") == ["lab1", "lab2"]
    (failed,) = [r for r in results if r.tags["device"] == "lab3"]
    assert (failed.status, failed.fields["error_kind"]) == ("error", "unreachable")
    # Tried again before giving up (--retries, 3 by default), each retry said and stored.
    retries = [r for r in store.records(measurement="retry") if r.tags["device"] == "lab3"]
    assert len(retries) == 3 and "retry 3 of 3" in output
    # ... and a JUnit error, not a silence.
    junit = export(store, "junit")
    assert 'errors="1"' in junit and "unreachable" in junit


def test_lab_cli_up_status_down_leaves_no_process(tmp_path: Path) -> None:
    folder = tmp_path / "cli-lab"
    runner = CliRunner()
    up = runner.invoke(main, ["lab", "up", "--count", "2", "--dir", str(folder)])
    assert up.exit_code == 0, up.output
    pids = [d.pid for d in lab_lib.load(folder)]
    status = runner.invoke(main, ["lab", "status", "--dir", str(folder)])
    assert status.output.count(" up") == 2
    down = runner.invoke(main, ["lab", "down", "--dir", str(folder)])
    assert down.exit_code == 0 and "lab1, lab2" in down.output
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    leftover = subprocess.run(["pgrep", "-f", str(folder)], capture_output=True, text=True)
    assert leftover.stdout == ""


def test_local_device_needs_no_inventory(tmp_path: Path, fleet_home: Path) -> None:
    result = CliRunner().invoke(main, ["run", smoke_suite(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "local" in result.output
    assert len(Store(fleet_home / "results.sqlite").records(measurement="result")) == 1


def test_ssh_config_supplies_address_port_user_and_key(
    lab: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab1 = next(d for d in lab_lib.load(lab) if d.name == "lab1")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"Host bench-pi\n  HostName {lab1.address}\n  Port {lab1.port}\n"
        f"  User {getpass.getuser()}\n  IdentityFile {lab / 'id_ed25519'}\n"
    )
    monkeypatch.setenv("HOME", str(home))
    # Only the alias in the inventory: where, which port, who and which key come from
    # ~/.ssh/config; the host key is still checked against the lab's known_hosts.
    inventory = lab / "by-alias.yaml"
    inventory.write_text(
        "all:\n  hosts:\n    pi:\n      ansible_host: bench-pi\n      fleet_class: pi\n"
        f"      fleet_python: {lab1.python}\n      fleet_workdir: {lab1.workdir}\n"
    )
    result = CliRunner().invoke(
        main,
        [
            "run",
            smoke_suite(tmp_path),
            "--inventory",
            str(inventory),
            "--devices",
            "pi",
            "--store",
            str(tmp_path / "r.sqlite"),
        ],
    )
    assert result.exit_code == 0, result.output
    (record,) = Store(tmp_path / "r.sqlite").records(measurement="result")
    assert (record.tags["device"], record.tags["device_class"]) == ("pi", "pi")


def test_transport_puts_checks_and_gets_files_atomically(lab: Path, tmp_path: Path) -> None:
    device = load_inventory(lab / "inventory.yaml").devices["lab1"]
    transport = connect(device)
    try:
        local = tmp_path / "blob.bin"
        local.write_bytes(bytes(range(256)) * 1000)
        remote = f"{device.workdir}/blob.bin"
        assert not transport.exists(remote)
        transport.put(local, remote)
        assert transport.exists(remote)
        back = tmp_path / "back.bin"
        transport.get(remote, back)
        assert back.read_bytes() == local.read_bytes()
        assert not [p for p in Path(device.workdir).iterdir() if p.suffix == ".tmp"]
        with pytest.raises(DeviceError, match=r"lab1: sending blob.bin to /nonexistent/x failed"):
            transport.put(local, "/nonexistent/x")
        assert transport.check(["echo", "a b;c"]) == "a b;c"  # argv survives the shell
    finally:
        transport.close()


def test_missing_key_file_names_the_inventory_line(lab: Path, tmp_path: Path) -> None:
    text = (lab / "inventory.yaml").read_text().replace(str(lab / "id_ed25519"), "/nope/key")
    (lab / "inventory.yaml").write_text(text)
    code, output = run(lab, tmp_path / "r.sqlite", "lab1")
    assert code == 2
    assert "lab1: SSH key /nope/key not found; fix ansible_ssh_private_key_file" in output
    assert "inventory.yaml:" in output


def test_lab_down_never_kills_a_process_that_reused_a_stale_pid(tmp_path: Path) -> None:
    folder = tmp_path / "stale-lab"
    (device,) = lab_lib.up(folder, 1)
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        lab_lib.stop_device(device)
        stale = dataclasses.replace(device, pid=stranger.pid, cgroup=None)
        lab_lib.stop_device(stale)  # e.g. lab.json from before a reboot
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
        lab_lib.down(folder)
