"""ssh as OpenSSH reads it, on a lab whose devices only a bastion reaches: ProxyJump from
~/.ssh/config and from the inventory's ansible_ssh_common_args, ProxyCommand, both
known_hosts files, StrictHostKeyChecking that never weakens, keepalives, and errors that
name the hop that failed. Real sshd everywhere, in a network namespace."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from bastion import BastionLab, bastion_lab
from click.testing import CliRunner
from faults import sshd_pids
from test_run_lab import smoke_suite

from fleet import lab as lab_lib
from fleet.cli import main
from fleet.errors import DeviceError, HostKeyError
from fleet.inventory import Device, load_inventory
from fleet.results.store import Store
from fleet.transport import connect
from fleet.transport.ssh import SSHTransport

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="network namespaces need root and iproute2",
    ),
]


@pytest.fixture(scope="module")
def behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionLab]:
    with bastion_lab(tmp_path_factory.mktemp("bastion-lab")) as lab:
        yield lab


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ~ (no ssh config, known_hosts or keys of the user's) and no ssh-agent."""
    folder = tmp_path / "home"
    (folder / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return folder


def bastion_entry(behind: BastionLab, name: str = "bastion", extra: str = "") -> str:
    return (
        f"Host {name}\n  HostName {behind.address}\n  Port {behind.port}\n"
        f"  User {getpass.getuser()}\n  IdentityFile {behind.bastion / 'id_ed25519'}\n{extra}"
    )


def devices(behind: BastionLab, inventory: Path | None = None) -> list[Device]:
    found = load_inventory(inventory or behind.devices / "inventory.yaml").devices
    return [d for d in found.values() if not d.is_local]


def copy_inventory(
    behind: BastionLab, folder: Path, known_hosts: str, common_args: str | None = None
) -> Path:
    """The devices' inventory in `folder`, with that known_hosts beside it and (on the
    group) that ansible_ssh_common_args."""
    inventory = yaml.safe_load((behind.devices / "inventory.yaml").read_text())
    if common_args is not None:
        inventory["all"]["children"]["lab"]["vars"] = {"ansible_ssh_common_args": common_args}
    folder.mkdir(exist_ok=True)
    (folder / "hosts.yaml").write_text(yaml.safe_dump(inventory))
    (folder / "known_hosts").write_text(known_hosts)
    return folder / "hosts.yaml"


def run_smoke(inventory: Path, tmp_path: Path) -> tuple[int, str, Store]:
    store = tmp_path / "results.sqlite"
    result = CliRunner().invoke(
        main,
        [
            *("run", smoke_suite(tmp_path), "--inventory", str(inventory)),
            *("--devices", "lab", "--store", str(store)),
        ],
    )
    return result.exit_code, result.output, Store(store)


def connect_fails(device: Device) -> DeviceError:
    with pytest.raises(DeviceError) as failed:
        connect(device).close()
    return failed.value


def test_the_devices_answer_only_through_the_bastion(behind: BastionLab, home: Path) -> None:
    for device in lab_lib.load(behind.devices):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((device.address, device.port), timeout=5).close()
    socket.create_connection((behind.address, behind.port), timeout=5).close()
    # Without a ProxyJump, fleet cannot reach them either.
    device = devices(behind)[0]
    assert f"{device.name}: cannot reach {device.host}:{device.port}" in str(connect_fails(device))


def test_a_run_through_proxyjump_in_ssh_config(
    behind: BastionLab, home: Path, tmp_path: Path
) -> None:
    """The devices' keys in known_hosts beside the inventory, the bastion's in
    ~/.ssh/known_hosts: both files are read."""
    (home / ".ssh" / "config").write_text(
        bastion_entry(behind) + "Host 127.0.0.6?\n  ProxyJump bastion\n"
    )
    (home / ".ssh" / "known_hosts").write_text(behind.bastion_known_hosts)
    code, output, store = run_smoke(behind.devices / "inventory.yaml", tmp_path)
    assert code == 0, output
    results = store.records(measurement="result")
    assert sorted((r.tags["device"], r.status) for r in results) == [
        ("lab50", "ok"),
        ("lab51", "ok"),
    ]


def test_a_run_through_proxyjump_in_ansible_ssh_common_args(
    behind: BastionLab, home: Path, tmp_path: Path
) -> None:
    """As Ansible users write it, on the group; the bastion's key is the default
    ~/.ssh/id_ed25519 and its host key sits beside the inventory with the devices'."""
    jump = f"{getpass.getuser()}@{behind.address}:{behind.port}"
    inventory = copy_inventory(
        behind,
        tmp_path / "inventory",
        behind.devices_known_hosts + behind.bastion_known_hosts,
        f"-o ProxyJump={jump} -o ControlMaster=auto -C",
    )
    shutil.copy(behind.bastion / "id_ed25519", home / ".ssh" / "id_ed25519")
    code, output, store = run_smoke(inventory, tmp_path)
    assert code == 0, output
    assert sorted(r.tags["device"] for r in store.records(measurement="result")) == [
        "lab50",
        "lab51",
    ]
    assert all(r.status == "ok" for r in store.records(measurement="result"))


def test_proxycommand_runs_ssh_w_through_the_bastion(behind: BastionLab, home: Path) -> None:
    """ProxyCommand from ~/.ssh/config, %h and %p expanded, run as ssh runs it (a shell)."""
    known = home / "bastion_known_hosts"
    known.write_text(behind.bastion_known_hosts)
    command = (
        f"ssh -F none -i {behind.bastion / 'id_ed25519'} -o BatchMode=yes"
        f" -o UserKnownHostsFile={known} -p {behind.port} -W %h:%p"
        f" {getpass.getuser()}@{behind.address}"
    )
    (home / ".ssh" / "config").write_text(f"Host 127.0.0.6?\n  ProxyCommand {command}\n")
    for device in devices(behind):
        transport = connect(device)
        try:
            assert isinstance(transport, SSHTransport) and transport.route.commands
            assert transport.check(["echo", "through", "ssh -W"]) == "through ssh -W"
        finally:
            transport.close()
        assert all(c.process.returncode is not None for c in transport.route.commands)


def test_a_failing_proxycommand_says_what_it_printed(behind: BastionLab, home: Path) -> None:
    device = devices(behind)[0]
    (home / ".ssh" / "config").write_text(
        "Host *\n  ProxyCommand sh -c 'echo no route to %h >&2; exit 3'\n"
    )
    message = str(connect_fails(device))
    assert message.startswith(f"{device.name}: ProxyCommand `sh -c 'echo no route to")
    assert f"({home / '.ssh' / 'config'}) failed: exited 3; no route to {device.host}" in message


def test_a_dead_jump_host_is_named_with_the_fix(behind: BastionLab, home: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    (home / ".ssh" / "config").write_text(
        f"Host gate\n  HostName 127.0.0.1\n  Port {closed}\nHost 127.0.0.6?\n  ProxyJump gate\n"
    )
    device = devices(behind)[0]
    failed = connect_fails(device)
    assert str(failed) == (
        f"{device.name}: jump host gate (127.0.0.1:{closed}): connection refused;"
        f" check ProxyJump in {home / '.ssh' / 'config'}"
    )
    assert failed.kind == "unreachable"


def test_a_device_the_bastion_cannot_reach_names_both(behind: BastionLab, home: Path) -> None:
    (home / ".ssh" / "config").write_text(
        bastion_entry(behind) + "Host 127.0.0.6?\n  ProxyJump bastion\n"
    )
    (home / ".ssh" / "known_hosts").write_text(behind.bastion_known_hosts)
    device = devices(behind)[0]
    gone = Device(device.name, device.host, port=1, key_file=device.key_file)
    message = str(connect_fails(gone))
    assert message.startswith(
        f"{device.name}: jump host bastion ({behind.address}:{behind.port}): cannot open a"
        f" connection to {device.host}:1 ("
    )
    assert "AllowTcpForwarding" in message


def test_a_key_changed_in_either_known_hosts_file_is_refused(
    behind: BastionLab, home: Path, tmp_path: Path
) -> None:
    """The bastion's right key in ~/.ssh/known_hosts, another beside the inventory."""
    (home / ".ssh" / "config").write_text(
        bastion_entry(behind) + "Host 127.0.0.6?\n  ProxyJump bastion\n"
    )
    (home / ".ssh" / "known_hosts").write_text(behind.bastion_known_hosts)
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    name = behind.bastion_known_hosts.split()[0]
    forged = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    inventory = copy_inventory(
        behind, tmp_path / "inventory", behind.devices_known_hosts + f"{name} {forged}\n"
    )
    beside = inventory.parent / "known_hosts"
    device = devices(behind, inventory)[0]
    with pytest.raises(HostKeyError) as refused:
        connect(device)
    message = str(refused.value)
    assert message.startswith(f"{device.name}: jump host bastion ({behind.address}:")
    assert "CHANGED (known SHA256:" in message and f"in {beside}," in message
    assert f"ssh-keygen -R '{name}' -f {beside}" in message
    # The same file without the forged line: the key in ~/.ssh/known_hosts is enough.
    beside.write_text(behind.devices_known_hosts)
    connect(device).close()


def test_stricthostkeychecking_no_in_ssh_config_does_not_weaken_checking(
    behind: BastionLab, home: Path, tmp_path: Path
) -> None:
    """The bastion's key is in no file: refused, whatever the config says."""
    (home / ".ssh" / "config").write_text(
        bastion_entry(behind, extra="  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n")
        + "Host 127.0.0.6?\n  ProxyJump bastion\n"
    )
    inventory = copy_inventory(behind, tmp_path / "inventory", behind.devices_known_hosts)
    device = devices(behind, inventory)[0]
    with pytest.raises(HostKeyError) as refused:
        connect(device)
    message = str(refused.value)
    assert message.startswith(f"{device.name}: jump host bastion (")
    assert "unknown host key SHA256:" in message
    assert f"(StrictHostKeyChecking no ({home / '.ssh' / 'config'}) is not followed)" in message


def test_stricthostkeychecking_in_the_inventory_does_not_weaken_checking(
    behind: BastionLab, home: Path, tmp_path: Path
) -> None:
    """As Ansible users often write it; the devices' keys are in no file: refused."""
    jump = f"{getpass.getuser()}@{behind.address}:{behind.port}"
    inventory = copy_inventory(
        behind,
        tmp_path / "inventory",
        behind.bastion_known_hosts,
        f"-o StrictHostKeyChecking=accept-new -J {jump}",
    )
    shutil.copy(behind.bastion / "id_ed25519", home / ".ssh" / "id_ed25519")
    for device in devices(behind, inventory):
        with pytest.raises(HostKeyError) as refused:
            connect(device)
        message = str(refused.value)
        assert message.startswith(f"{device.name}: unknown host key SHA256:")
        assert "(StrictHostKeyChecking accept-new (ansible_ssh_common_args (" in message
        assert f"{inventory}:" in message and "is not followed)" in message


def test_serveralivecountmax_drops_a_connection_that_stops_answering(
    behind: BastionLab, home: Path
) -> None:
    (home / ".ssh" / "config").write_text(
        bastion_entry(behind)
        + "Host 127.0.0.6?\n  ProxyJump bastion\n  ServerAliveInterval 1\n"
        + "  ServerAliveCountMax 2\n"
    )
    (home / ".ssh" / "known_hosts").write_text(behind.bastion_known_hosts)
    device = devices(behind)[0]
    transport = connect(device)
    stopped = sshd_pids(next(d for d in lab_lib.load(behind.devices) if d.name == device.name))
    try:
        assert transport.alive()
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 120
        while transport.alive():
            assert time.monotonic() < deadline, "the silent connection was never dropped"
            time.sleep(0.2)
        # The bastion answered all along: only the device's own connection was dropped.
        assert isinstance(transport, SSHTransport)
        bastion = transport.route.clients[0].get_transport()
        assert bastion is not None and bastion.is_active()
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        transport.close()
