from __future__ import annotations

from pathlib import Path

import pytest

from fleet.errors import ConfigError
from fleet.inventory import Device, load_inventory, share

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    return path


def test_example_inventory_has_the_fleet_the_readme_describes() -> None:
    inv = load_inventory(ROOT / "inventory" / "example.yaml")
    classes = {d.name: d.device_class for d in inv.devices.values()}
    assert classes == {
        "pi5-a": "pi",
        "pi5-b": "pi",
        "orin-nano": "jetson",
        "mac-mini-m2": "mac",
        "gpu-server": "gpu",
        "local": "local",
    }
    gpu = inv.devices["gpu-server"]
    assert (gpu.host, gpu.port, gpu.user) == ("192.0.2.41", 2222, "fleet")
    assert inv.devices["mac-mini-m2"].user == "ci"  # host vars beat group vars


def test_select_by_group_host_and_tag() -> None:
    inv = load_inventory(ROOT / "inventory" / "example.yaml")
    assert [d.name for d in inv.select(["pi", "jetson"])] == ["pi5-a", "pi5-b", "orin-nano"]
    assert [d.name for d in inv.select(["gpu-server"])] == ["gpu-server"]
    assert {d.name for d in inv.select(["cuda"])} == {"orin-nano", "gpu-server"}
    assert len(inv.select(["all"])) == 5


def test_local_device_is_always_there_without_inventory() -> None:
    inv = load_inventory(None)
    (device,) = inv.select(["local"])
    assert device.is_local and device.device_class == "local"


def test_unknown_selector_lists_what_exists() -> None:
    inv = load_inventory(ROOT / "inventory" / "example.yaml")
    with pytest.raises(
        ConfigError, match=r"no device matches 'tpu'.*groups: .*jetson.*hosts:.*pi5-a"
    ):
        inv.select(["tpu"])


def test_group_vars_inherit_through_children(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
all:
  vars: {ansible_user: ops, fleet_python: /usr/bin/python3}
  children:
    edge:
      vars: {fleet_class: pi}
      children:
        pis:
          hosts:
            p1: {ansible_host: 10.0.0.1}
""",
    )
    inv = load_inventory(path)
    device = inv.devices["p1"]
    assert (device.user, device.device_class, device.python) == ("ops", "pi", "/usr/bin/python3")
    assert [d.name for d in inv.select(["edge"])] == ["p1"]


def test_known_hosts_beside_the_inventory_is_used(tmp_path: Path) -> None:
    path = write(tmp_path, "all:\n  hosts:\n    h1: {ansible_host: 127.0.0.5}\n")
    assert load_inventory(path).devices["h1"].known_hosts is None
    (tmp_path / "known_hosts").write_text("")
    assert load_inventory(path).devices["h1"].known_hosts == tmp_path / "known_hosts"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "all:\n  hosts:\n    h: {fleet_class: toaster}\n",
            r"inventory.yaml:3: fleet_class 'toaster'",
        ),
        ("all:\n  hosts:\n    h: {ansible_port: ssh}\n", r":3: ansible_port of 'h' must be a port"),
        ("all:\n  hosts:\n    h: {fleet_tag: [a]}\n", r":3: unknown variable 'fleet_tag'"),
        ("all:\n  host:\n    h: {}\n", r":2: unknown key 'host' in group 'all'"),
        ("all:\n  hosts:\n    h: {fleet_tags: a}\n", r"fleet_tags of 'h' must be a list"),
        ("all:\n  hosts: [a, b\n", r"inventory.yaml:\d+: invalid YAML"),
        ("- a\n- b\n", r"inventory.yaml: an inventory is a mapping"),
    ],
)
def test_bad_inventory_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_inventory(write(tmp_path, text))


def test_missing_inventory_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="inventory file not found"):
        load_inventory(tmp_path / "nope.yaml")


def test_top_level_groups_without_all_still_make_all(tmp_path: Path) -> None:
    inv = load_inventory(
        write(tmp_path, "pis:\n  hosts:\n    p1: {}\ngpus:\n  hosts:\n    g1: {}\n")
    )
    assert [d.name for d in inv.select(["all"])] == ["p1", "g1"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"all:\n  hosts:\n    h\xff: {}\n", r"inventory.yaml: not UTF-8 text \(byte 19\)"),
        (b"all:\n  hosts:\n    h\x07: {}\n", r"inventory.yaml:3: invalid YAML: .*#x0007"),
    ],
)
def test_unreadable_text_is_a_config_error(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError, match=message):
        load_inventory(path)


# Issue 12, defects 6 and 9: every malformed host or variable is refused, with file:line.
@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "all:\n  hosts:\n    h: {ansible_port: true}\n",
            r":3: ansible_port of 'h' must be a port",
        ),
        ("all:\n  hosts:\n    h: {ansible_port: 70000}\n", r"from 1 to 65535, not 70000"),
        ("all:\n  hosts:\n    h: {ansible_user: [root]}\n", r":3: ansible_user must be a login"),
        ("all:\n  hosts:\n    h: {ansible_user: 'a b'}\n", r"ansible_user must be a login name"),
        ("all:\n  hosts:\n    h: {ansible_host: '-oProxyCommand=x'}\n", r"ansible_host must"),
        ('all:\n  hosts:\n    h: {fleet_python: "a\\nb"}\n', r":3: fleet_python must be a path"),
        ("all:\n  hosts:\n    h: {fleet_workdir: ''}\n", r":3: fleet_workdir must be a path"),
        ("all:\n  hosts:\n    h: {fleet_tags: ['a,b']}\n", r":3: tag 'a,b' of 'h' must be"),
        ("all:\n  hosts:\n    h: {fleet_class: [pi]}\n", r":3: fleet_class \['pi'\] of 'h'"),
        ("all:\n  hosts:\n    ../../x: {}\n", r"inventory.yaml:3: host name '../../x' must be"),
        ("all:\n  hosts:\n    'a b': {}\n", r"inventory.yaml:3: host name 'a b' must be"),
        ("all:\n  hosts:\n    'h:2222': {}\n", r"put an address with ':' in ansible_host"),
        ("all:\n  hosts:\n    ? [a]\n    : {}\n", r"inventory.yaml:3: invalid YAML: a key must"),
        # The second declaration of a host in one group used to win silently.
        (
            "all:\n  hosts:\n    h: {ansible_host: 10.0.0.1}\n    h: {ansible_host: 10.0.0.2}\n",
            r"inventory.yaml:4: invalid YAML: key 'h' appears twice \(first on line 3\)",
        ),
    ],
)
def test_malformed_hosts_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        load_inventory(write(tmp_path, text))
    assert "\n" not in str(error.value)


def test_a_host_in_two_groups_is_one_device_as_in_ansible(tmp_path: Path) -> None:
    inv = load_inventory(
        write(
            tmp_path,
            "all:\n  children:\n    edge:\n      hosts:\n        p1: {ansible_host: 10.0.0.1}\n"
            "    arm:\n      hosts:\n        p1:\n",
        )
    )
    assert inv.devices["p1"].host == "10.0.0.1"
    assert inv.devices["p1"].groups == ("edge", "arm")


def test_a_host_in_two_files_of_a_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("all:\n  hosts:\n    h: {ansible_host: 10.0.0.1}\n")
    (tmp_path / "b.yaml").write_text("all:\n  hosts:\n    h: {ansible_host: 10.0.0.2}\n")
    with pytest.raises(ConfigError, match=r"b.yaml:3: host 'h' is also declared at .*a.yaml:3"):
        load_inventory(tmp_path)


def test_ipv6_and_dns_addresses_are_accepted(tmp_path: Path) -> None:
    inv = load_inventory(
        write(
            tmp_path,
            "all:\n  hosts:\n    v6: {ansible_host: 'fe80::1%eth0'}\n"
            "    dns: {ansible_host: pi-5.lab.example.com, ansible_user: ci_runner}\n",
        )
    )
    assert inv.devices["v6"].host == "fe80::1%eth0"
    assert inv.devices["dns"].user == "ci_runner"


def test_an_oversized_inventory_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text("all:\n  hosts:\n" + "#" * (2 * 1024 * 1024) + "\n")
    with pytest.raises(ConfigError, match=r"inventory.yaml: larger than 1 MiB"):
        load_inventory(path)


@pytest.mark.parametrize("selectors", [[""], ["", " "]])
def test_selecting_nothing_is_an_error_not_an_empty_run(selectors: list[str]) -> None:
    """Issue 12, defect 9: `--devices ,` ran 0 devices and exited 0."""
    with pytest.raises(ConfigError, match="no device selected by"):
        load_inventory(ROOT / "inventory" / "example.yaml").select(selectors)


def test_shards_split_a_selection_and_keep_each_device_in_its_share() -> None:
    devices = [Device(name=f"pi-{i}", host=f"10.0.0.{i}") for i in range(40)]
    shares = [share(devices, k, 4) for k in range(1, 5)]
    assert sorted(d.name for s in shares for d in s) == sorted(d.name for d in devices)
    assert all(shares)  # 40 names over 4 shares: none empty
    # A device's share depends on its name only, not on what else is selected.
    assert share(devices[:7], 2, 4) == [d for d in shares[1] if d in devices[:7]]
    assert share(devices, 1, 1) == devices
