"""ansible/provision.yml against a real sshd lab device, then `fleet run` with what it made.

The lab device is this machine, so system packages are skipped (fleet_skip_packages) and
the venv gets only numpy and onnxruntime (from the package index) to keep the test short.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy
import onnxruntime
import pytest
import yaml
from click.testing import CliRunner

from fleet import lab as lab_lib
from fleet import paths
from fleet.cli import main
from fleet.results.store import Store

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOK = ROOT / "ansible" / "provision.yml"
VENV_CHECK = ROOT / "ansible" / "roles" / "fleet_device" / "files" / "check_venv.py"
DISTRIBUTIONS = ROOT / "agents" / "fleet_agent" / "distributions.py"
SMOKE = ROOT / "suites" / "smoke.yaml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def ansible_playbook() -> Path:
    """ansible-playbook from its own venv in fleet's cache, built on first use (ansible-core
    and its pins stay out of the environment fleet runs in)."""
    venv = paths.cache_dir() / "ansible-venv"
    program = venv / "bin" / "ansible-playbook"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / "ansible-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers may get here together
        # pip installs ansible-core after its dependencies: its script marks a whole venv.
        if not program.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "ansible-core>=2.16"],
                check=True,
            )
    return program


@pytest.fixture
def lab1(tmp_path: Path) -> Iterator[Path]:
    """One lab device: a real OpenSSH sshd on 127.0.0.11."""
    folder = tmp_path / "lab"
    lab_lib.up(folder, 1)
    try:
        yield folder
    finally:
        lab_lib.down(folder)


def provision(playbook: Path, lab: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run the playbook on the lab; the process and the number of changed tasks on lab1."""
    env = {
        **os.environ,
        "ANSIBLE_HOST_KEY_CHECKING": "True",  # the playbook points ssh at LAB/known_hosts
        "ANSIBLE_PIPELINING": "True",  # fewer round trips per task
        "ANSIBLE_NOCOLOR": "1",
    }
    proc = subprocess.run(
        [str(playbook), "-i", str(lab / "inventory.yaml"), str(PLAYBOOK)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    recap = re.search(r"^lab1\s+:\s+ok=\d+\s+changed=(\d+)", proc.stdout, re.MULTILINE)
    assert recap, proc.stdout + proc.stderr
    return proc, int(recap.group(1))


def test_venv_check_finds_modules_in_the_agents_table(tmp_path: Path) -> None:
    """As the role runs it: the script and the agent's table copied into one folder."""
    for source in (VENV_CHECK, DISTRIBUTIONS):
        shutil.copy(source, tmp_path)
    check = [sys.executable, str(tmp_path / "check_venv.py")]
    # A vendor build's wheel installs the module onnxruntime, as NVIDIA's does on a Jetson.
    wheel = "/work/onnxruntime_gpu-1.19.0-cp310-cp310-linux_aarch64.whl"
    proc = subprocess.run([*check, "numpy<2", wheel, "PyYAML"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"numpy {numpy.__version__}",
        f"onnxruntime {onnxruntime.__version__} providers: "
        + ", ".join(onnxruntime.get_available_providers()),
        "PyYAML: installed (fleet's agent does not import it)",
    ]
    missing = subprocess.run([*check, "tflite-runtime==2.14.0"], capture_output=True, text=True)
    assert missing.returncode == 1
    assert missing.stderr.startswith("tflite_runtime: does not import"), missing.stderr


def test_provisioned_device_runs_the_smoke_suite(
    ansible_playbook: Path, lab1: Path, tmp_path: Path
) -> None:
    # The controller's new key goes in through the playbook; the run below logs in with it.
    key = tmp_path / "fleet_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (lab1 / "group_vars").mkdir()
    (lab1 / "group_vars" / "lab.yml").write_text(
        yaml.safe_dump(
            {
                "fleet_skip_packages": True,  # the device is this machine: no apt here
                "fleet_runtimes": ["onnxruntime"],
                "fleet_base_python": sys.executable,
                "ansible_python_interpreter": sys.executable,
                "fleet_authorized_key": key.with_suffix(".pub").read_text().strip(),
                "fleet_authorized_keys_file": str(lab1 / "authorized_keys"),  # the lab sshd's
            }
        )
    )

    first, changed = provision(ansible_playbook, lab1)
    assert first.returncode == 0, first.stdout + first.stderr
    assert changed > 0
    printed = re.search(r"lab1: fleet_python: (\S+)", first.stdout)
    assert printed, first.stdout
    python = printed.group(1)
    assert python == str(lab1 / "lab1" / "work" / "venv" / "bin" / "python")
    imports = subprocess.run(
        [python, "-c", "import numpy, onnxruntime; print(onnxruntime.get_device())"],
        capture_output=True,
        text=True,
    )
    assert imports.returncode == 0 and imports.stdout.strip() == "CPU", imports.stderr

    second, changed = provision(ansible_playbook, lab1)
    assert second.returncode == 0, second.stdout + second.stderr
    assert changed == 0, second.stdout

    inventory = yaml.safe_load((lab1 / "inventory.yaml").read_text())
    device = inventory["all"]["children"]["lab"]["hosts"]["lab1"]
    device.update(fleet_python=python, ansible_ssh_private_key_file=str(key))
    provisioned = lab1 / "provisioned.yaml"  # beside the lab's known_hosts
    provisioned.write_text(yaml.safe_dump(inventory))
    store = tmp_path / "results.sqlite"
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(SMOKE),
            "--inventory",
            str(provisioned),
            "--devices",
            "lab1",
            "--store",
            str(store),
        ],
    )
    assert result.exit_code == 0, result.output
    (record,) = Store(store).records(None, "result")
    assert record.tags["device"] == "lab1" and record.fields["status"] == "ok"


def test_unknown_host_key_stops_the_playbook(
    ansible_playbook: Path, lab1: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    (address, *_), forged = (lab1 / "known_hosts").read_text().split(), other.with_suffix(".pub")
    (lab1 / "known_hosts").write_text(f"{address} {' '.join(forged.read_text().split()[:2])}\n")

    proc, changed = provision(ansible_playbook, lab1)
    assert proc.returncode != 0 and changed == 0
    assert "Host key verification failed" in proc.stdout + proc.stderr
    assert not (lab1 / "lab1" / "work" / "venv").exists()
