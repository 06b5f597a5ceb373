"""`fleet devices` on a lab of real sshd devices: the facts, and every way a device is not
usable, each with its exit code and the line that says why."""

from __future__ import annotations

import ast
import fcntl
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from fleet import lab as lab_lib
from fleet import preflight
from fleet.agent_build import build_agent
from fleet.cli import main

pytestmark = pytest.mark.slow


def devices(lab: Path, *args: str, inventory: Path | None = None) -> Result:
    inventory = inventory or lab / "inventory.yaml"
    return CliRunner().invoke(main, ["devices", "--inventory", str(inventory), *args])


def rows(result: Result) -> dict[str, list[str]]:
    """The table by device: its cells split on runs of two spaces or more."""
    table = {}
    for line in result.stdout.splitlines()[1:]:
        cells = [c.strip() for c in line.split("  ") if c.strip()]
        table[cells[0]] = cells
    return table


def by_device(result: Result) -> dict[str, dict[str, object]]:
    report = json.loads(result.stdout)
    return {d["device"]: d for d in report["devices"]}


def device(lab: Path, name: str) -> lab_lib.LabDevice:
    return next(d for d in lab_lib.load(lab) if d.name == name)


def test_every_device_usable_with_its_facts(lab: Path) -> None:
    agent = build_agent()
    shutil.copyfile(agent.path, Path(device(lab, "lab2").workdir) / agent.name)

    result = devices(lab, "--devices", "lab")
    assert result.exit_code == 0, result.output
    assert result.stdout.split()[:3] == ["device", "reachable", "host"]
    table = rows(result)
    assert sorted(table) == ["lab1", "lab2", "lab3"]
    for cells in table.values():
        assert cells[1:4] == ["yes", "ok", "ok"]
        assert cells[-2:] == ["free", "yes"]
    assert "3 of 3 device(s) usable" in result.stderr

    facts = by_device(devices(lab, "--devices", "lab", "--json"))
    import numpy
    import onnxruntime

    for name, fact in facts.items():
        assert fact["usable"] is True and fact["problems"] == []
        assert fact["numpy"] == numpy.__version__
        assert fact["runtimes"]["onnxruntime"] == onnxruntime.__version__  # type: ignore[index]
        assert fact["workdir"] == device(lab, name).workdir
        assert isinstance(fact["free_mb"], float) and fact["free_mb"] > 0
        assert fact["busy"] is False and fact["holder"] is None
    assert facts["lab2"]["agent"] == "current"
    assert facts["lab1"]["agent"] == "missing"  # fleet run pushes it: still usable


def test_stopped_sshd_is_unreachable_and_exit_2(lab: Path) -> None:
    lab_lib.stop_device(device(lab, "lab3"))
    result = devices(lab, "--devices", "lab")
    assert result.exit_code == 2, result.output
    table = rows(result)
    assert table["lab3"][1:4] == ["no", "-", "-"] and table["lab3"][-1] == "NO"
    assert table["lab1"][-1] == table["lab2"][-1] == "yes"
    assert "lab3: unreachable: cannot reach 127.0.0.13" in result.stderr
    assert "sshd running?" in result.stderr  # the fix
    assert "2 of 3 device(s) usable" in result.stderr


def test_busy_device_names_its_holder(lab: Path) -> None:
    holder = "run 20261201T020000Z-abcdef from ci@build-3 since 2026-12-01 02:00:00 UTC"
    with open(Path(device(lab, "lab1").workdir) / "agent.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `serve` holds it
        lock.write(holder)
        lock.flush()
        result = devices(lab, "--devices", "lab")
        report = devices(lab, "--devices", "lab1", "--json")
    assert result.exit_code == 2, result.output
    assert rows(result)["lab1"][-2:] == ["BUSY", "NO"]
    assert rows(result)["lab2"][-2:] == ["free", "yes"]
    assert f"lab1: busy: held by {holder}" in result.stderr
    fact = by_device(report)["lab1"]
    assert (fact["busy"], fact["holder"], fact["usable"]) == (True, holder, False)
    # The check only tried the lock: the holder's text is intact, and once the run is
    # gone the device is free again.
    assert (Path(device(lab, "lab1").workdir) / "agent.lock").read_text() == holder
    assert devices(lab, "--devices", "lab1").exit_code == 0


def test_json_parses_and_says_why(lab: Path) -> None:
    lab_lib.stop_device(device(lab, "lab2"))
    result = devices(lab, "--devices", "lab1,lab2", "--json")
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)  # stdout is JSON only; the lines go to stderr
    assert report["usable"] is False
    facts = {d["device"]: d for d in report["devices"]}
    assert list(facts) == ["lab1", "lab2"]
    assert facts["lab1"]["usable"] is True and facts["lab1"]["error_kind"] is None
    assert facts["lab2"]["reachable"] is False and facts["lab2"]["error_kind"] == "unreachable"
    assert facts["lab2"]["python"] is None
    assert facts["lab2"]["problems"][0].startswith("unreachable: cannot reach")


def test_changed_host_key_is_refused(lab: Path, tmp_path: Path) -> None:
    lab2 = device(lab, "lab2")
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    forged = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    known = [
        f"[{lab2.address}]:{lab2.port} {forged}" if f"]:{lab2.port} " in line else line
        for line in (lab / "known_hosts").read_text().splitlines()
    ]
    (lab / "known_hosts").write_text("\n".join(known) + "\n")

    result = devices(lab, "--devices", "lab")
    assert result.exit_code == 2, result.output
    assert rows(result)["lab2"][1:4] == ["yes", "REFUSED", "-"]
    assert "lab2: host_key: host key of" in result.stderr and "CHANGED" in result.stderr
    assert "ssh-keygen -R" in result.stderr
    assert not list(Path(lab2.workdir).iterdir())  # nothing ran there


def with_python(lab: Path, python: str) -> Path:
    """The lab's inventory with lab1 given another interpreter."""
    inventory = yaml.safe_load((lab / "inventory.yaml").read_text())
    inventory["all"]["children"]["lab"]["hosts"]["lab1"]["fleet_python"] = python
    path = lab / "other-python.yaml"  # beside the lab's known_hosts
    path.write_text(yaml.safe_dump(inventory))
    return path


def test_wrong_python_is_named_with_the_fix(lab: Path) -> None:
    path = with_python(lab, "/no/such/python3")
    result = devices(lab, "--devices", "lab1", inventory=path)
    assert result.exit_code == 2, result.output
    assert rows(result)["lab1"][1:5] == ["yes", "ok", "ok", "-"]
    assert "lab1: python: /no/such/python3 not found" in result.stderr
    assert "fix fleet_python" in result.stderr


def test_local_device_without_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(main, ["devices", "--json"])
    assert result.exit_code == 0, result.output
    (local,) = json.loads(result.stdout)["devices"]
    assert local["device"] == "local" and local["usable"] is True
    assert local["agent"] == "missing" and local["busy"] is False


def test_python_without_numpy_or_runtime(lab: Path, tmp_path: Path) -> None:
    venv = tmp_path / "bare-venv"  # this interpreter, none of its packages
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    result = devices(lab, "--devices", "lab1", inventory=with_python(lab, str(venv / "bin/python")))
    assert result.exit_code == 2, result.output
    assert rows(result)["lab1"][5:7] == ["MISSING", "NONE"]
    assert "lab1: numpy: not installed for" in result.stderr
    assert "lab1: runtime: none installed for" in result.stderr and "provision" in result.stderr


def imported(*argv: str, stdin: bytes = b"") -> tuple[set[str], bytes]:
    """The modules a Python without site (-S: nothing of this machine's .pth files) imports to
    run argv, and what it prints."""
    done = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", *argv], input=stdin, capture_output=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.decode().splitlines()
    return {line.rpartition("|")[2].strip() for line in lines[1:]}, done.stdout


def test_the_check_imports_next_to_nothing(tmp_path: Path) -> None:
    """The device's side of `fleet devices` costs a Python start and a few milliseconds: it
    imports no module beyond what site loads (os) but fcntl, errno and __future__: not typing,
    json or re (each costs a Python 3.8 on a small board about as much as its own start),
    subprocess (no tool is there to run) or importlib.metadata."""
    bare, _ = imported("-c", "import os")
    used, out = imported(
        "-c", preflight.BOOT, str(tmp_path), "agent-x.pyz", stdin=preflight.check_script()
    )
    agent = {name for name in used if name.partition(".")[0] == "fleet_agent"}
    modules = ("check", "distributions", "live", "live_parse")
    assert agent == {"fleet_agent", *(f"fleet_agent.{m}" for m in modules)}
    assert used - bare - agent == {"__future__", "errno", "fcntl"}
    facts = ast.literal_eval(out.decode())  # a literal: check.py says why not JSON
    assert facts["python"] == platform.python_version() and facts["workdir"] == str(tmp_path)
    assert facts["agent"] is False and facts["busy"] is False
