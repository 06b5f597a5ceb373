from __future__ import annotations

from pathlib import Path

import pytest

from fleet.errors import ConfigError
from fleet.inventory import load_inventory

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
        (b"all:\n  hosts:\n    h\x07: {}\n", r"inventory.yaml: invalid YAML: .*#x0007"),
    ],
)
def test_unreadable_text_is_a_config_error(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError, match=message):
        load_inventory(path)
