"""How fleet reads ssh's settings for a host, without connecting: ~/.ssh/config (Host
patterns), the inventory's ansible_ssh_common_args/extra_args over it, ProxyJump chains,
ProxyCommand tokens, keepalives, known_hosts files and StrictHostKeyChecking."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest

from fleet.errors import ConfigError, DeviceError
from fleet.inventory import Device, load_inventory
from fleet.transport.sshconfig import KEEPALIVE_S, device_hop, jump_hop
from fleet.transport.sshlogin import login


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    (folder / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(folder))
    return folder


def device(tmp_path: Path, host_vars: str, name: str = "pi3") -> Device:
    """Host `name` of a one-host inventory whose variables are `host_vars` (YAML lines)."""
    lines = "".join(f"      {line}\n" for line in host_vars.strip().splitlines())
    path = tmp_path / "hosts.yaml"
    path.write_text(f"all:\n  hosts:\n    {name}:\n{lines}")
    return load_inventory(path).devices[name]


def test_proxyjump_in_the_inventory_as_ansible_users_write_it(home: Path, tmp_path: Path) -> None:
    pi = device(
        tmp_path,
        "ansible_host: 10.0.0.7\n"
        "ansible_ssh_common_args: '-o ProxyJump=ops@bastion:2222 -o ControlMaster=auto -C'",
    )
    hop = device_hop(pi)
    assert hop.jump == ("ops@bastion:2222",) and hop.command is None
    assert hop.proxy_from == f"ansible_ssh_common_args ({tmp_path / 'hosts.yaml'}:5)"
    jump = jump_hop(hop, hop.jump[-1], hop.jump[:-1])
    assert (jump.label, jump.hostname, jump.port, jump.user) == (
        "jump host bastion",
        "bastion",
        2222,
        "ops",
    )
    assert jump.jump == () and jump.device == "pi3"


def test_a_jump_chain_reaches_the_last_through_the_others(home: Path, tmp_path: Path) -> None:
    """-J a,b: b is reached through a, as ssh does; the jump host's own config applies."""
    (home / ".ssh" / "config").write_text("Host outer\n  HostName 192.0.2.1\n  Port 2200\n")
    hop = device_hop(device(tmp_path, "ansible_ssh_extra_args: -J outer,ssh://me@[fd00::5]:22"))
    last = jump_hop(hop, hop.jump[-1], hop.jump[:-1])
    assert (last.hostname, last.port, last.user, last.jump) == ("fd00::5", 22, "me", ("outer",))
    first = jump_hop(last, last.jump[-1], last.jump[:-1])
    assert (first.hostname, first.port, first.jump) == ("192.0.2.1", 2200, ())


def test_ssh_config_host_patterns_give_the_jump(home: Path, tmp_path: Path) -> None:
    (home / ".ssh" / "config").write_text(
        "Host 10.1.* !10.1.0.1\n  ProxyJump gate\n  ServerAliveInterval 5\n"
        "Host *\n  ServerAliveCountMax 7\n"
    )
    behind = device_hop(device(tmp_path, "ansible_host: 10.1.2.3"))
    assert behind.jump == ("gate",) and behind.proxy_from == str(home / ".ssh" / "config")
    assert (behind.alive_s, behind.alive_count) == (5.0, 7)
    gate = device_hop(device(tmp_path, "ansible_host: 10.1.0.1"))
    assert gate.jump == ()
    # No interval set: fleet's keepalive, and no connection dropped for missed answers.
    assert (gate.alive_s, gate.alive_count) == (KEEPALIVE_S, None)


def test_the_inventory_overrides_the_config_and_proxycommand_tokens_expand(
    home: Path, tmp_path: Path
) -> None:
    (home / ".ssh" / "config").write_text("Host *\n  ProxyJump gate\n  User nobody\n")
    pi = device(
        tmp_path,
        "ansible_host: 10.0.0.7\nansible_port: 2022\nansible_user: pi\n"
        "ansible_ssh_common_args: -o 'ProxyCommand=nc -X 5 %r@%h %p'",
    )
    hop = device_hop(pi)
    assert hop.jump == () and hop.command == "nc -X 5 pi@10.0.0.7 2022"
    assert (hop.port, hop.user) == (2022, "pi")


def test_proxyjump_none_in_the_inventory_turns_off_the_configs(home: Path, tmp_path: Path) -> None:
    (home / ".ssh" / "config").write_text("Host *\n  ProxyCommand ssh -W %h:%p gate\n")
    assert device_hop(device(tmp_path, "ansible_ssh_common_args: -oProxyJump=none")).command is None
    assert device_hop(device(tmp_path, "fleet_class: pi")).command == "ssh -W pi3:22 gate"


def test_known_hosts_files_are_every_one_ssh_reads(home: Path, tmp_path: Path) -> None:
    (tmp_path / "known_hosts").write_text("")
    hop = device_hop(device(tmp_path, "fleet_class: pi"))
    assert hop.known_hosts == (
        tmp_path / "known_hosts",
        home / ".ssh" / "known_hosts",
        Path("/etc/ssh/ssh_known_hosts"),
    )
    (home / ".ssh" / "config").write_text("Host *\n  UserKnownHostsFile ~/a ~/b\n")
    assert device_hop(device(tmp_path, "fleet_class: pi")).known_hosts[1:3] == (
        home / "a",
        home / "b",
    )


@pytest.mark.parametrize("setting", ["no", "accept-new", "off"])
def test_weak_stricthostkeychecking_is_named_not_followed(
    home: Path, tmp_path: Path, setting: str
) -> None:
    (home / ".ssh" / "config").write_text(f"Host *\n  StrictHostKeyChecking {setting}\n")
    hop = device_hop(device(tmp_path, "fleet_class: pi"))
    assert hop.weak_checking == f"StrictHostKeyChecking {setting} ({home / '.ssh' / 'config'})"
    (home / ".ssh" / "config").write_text("Host *\n  StrictHostKeyChecking yes\n")
    assert device_hop(device(tmp_path, "fleet_class: pi")).weak_checking == ""


def test_an_identity_file_in_the_inventory_is_the_only_key(home: Path, tmp_path: Path) -> None:
    (home / ".ssh" / "config").write_text("Host *\n  IdentityFile ~/.ssh/other\n")
    hop = device_hop(device(tmp_path, "ansible_ssh_private_key_file: /keys/pi"))
    assert hop.key_files == ("/keys/pi",)
    assert hop.key_from == f"ansible_ssh_private_key_file ({tmp_path / 'hosts.yaml'}:3)"
    assert device_hop(device(tmp_path, "fleet_class: pi")).key_files == (
        str(home / ".ssh" / "other"),
    )
    assert device_hop(device(tmp_path, "fleet_class: pi")).user == getpass.getuser()


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ("-o", "-o needs a value"),
        ("ProxyJump=gate", "'ProxyJump=gate' is not an ssh option"),
        ("-o ServerAliveInterval=soon", "ServerAliveInterval 'soon'"),
        ("-J 'a b c'", "ProxyJump 'a b c'"),
    ],
)
def test_bad_ssh_args_name_the_inventory_line(
    home: Path, tmp_path: Path, args: str, problem: str
) -> None:
    pi = device(tmp_path, f'ansible_ssh_common_args: "{args}"')

    def resolve() -> None:
        hop = device_hop(pi)
        jump_hop(hop, hop.jump[-1], hop.jump[:-1])

    with pytest.raises(DeviceError) as bad:
        resolve()
    assert str(bad.value).startswith("pi3: ") and problem in str(bad.value)
    assert f"{tmp_path / 'hosts.yaml'}:4" in str(bad.value)


def test_unbalanced_quotes_are_refused_when_the_inventory_loads(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"hosts.yaml:4: ansible_ssh_common_args .*quotes"):
        device(tmp_path, "ansible_ssh_common_args: -o 'ProxyJump=gate")


def test_a_proxyjump_that_loops_is_refused_before_connecting(home: Path, tmp_path: Path) -> None:
    """`Host *` jumping through gate makes gate jump through itself; ssh would recurse."""
    (home / ".ssh" / "config").write_text("Host *\n  ProxyJump gate\n")
    with pytest.raises(
        DeviceError,
        match=r"^pi3: jump host gate \(gate:22\): more than 8 jump hosts; does ProxyJump",
    ):
        login(device_hop(device(tmp_path, "fleet_class: pi")))
