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


# Issue 15: inventories as Ansible reads them (the comparison with a real ansible-core is in
# tests/test_inventory_ansible.py; these need no Ansible).
def test_ini_inventory_with_ranges_children_and_vars(tmp_path: Path) -> None:
    path = tmp_path / "hosts.ini"
    path.write_text(
        "loose ansible_host=10.0.0.1\n[pi]\npi[01:03] ansible_port=2222\n"
        "[edge:children]\npi\n[edge:vars]\nfleet_class=pi\nfleet_tags=['arm64']\n"
    )
    inv = load_inventory(path)
    assert [d.name for d in inv.select(["edge"])] == ["pi01", "pi02", "pi03"]
    pi02 = inv.devices["pi02"]
    assert (pi02.port, pi02.device_class, pi02.tags, pi02.groups) == (
        2222,
        "pi",
        ("arm64",),
        ("pi",),
    )
    assert inv.groups["ungrouped"] == ["loose"]


def test_group_vars_and_host_vars_files_and_folders(tmp_path: Path) -> None:
    path = write(tmp_path, "all:\n  children:\n    pi:\n      hosts:\n        p1:\n        p2:\n")
    (tmp_path / "group_vars" / "pi").mkdir(parents=True)
    (tmp_path / "group_vars" / "pi" / "a.yml").write_text("fleet_class: pi\nansible_user: a\n")
    (tmp_path / "group_vars" / "pi" / "b.yml").write_text("ansible_user: b\n")
    (tmp_path / "group_vars" / "all").write_text("ansible_user: everyone\nfleet_python: /py\n")
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "p2.json").write_text('{"ansible_port": 2202}')
    inv = load_inventory(path)
    p1, p2 = inv.devices["p1"], inv.devices["p2"]
    assert (p1.device_class, p1.user, p1.python, p1.port) == ("pi", "b", "/py", 22)
    assert p2.port == 2202


def test_group_precedence_depth_priority_then_name(tmp_path: Path) -> None:
    inv = load_inventory(
        write(
            tmp_path,
            """
all:
  vars: {ansible_user: all, fleet_workdir: all}
  children:
    b:
      vars: {ansible_user: b, fleet_workdir: b, ansible_group_priority: 10}
      hosts: {h: {}}
    a:
      vars: {ansible_user: a}
      children:
        deep:
          vars: {fleet_python: deep}
          hosts: {h: {}}
""",
        )
    )
    # a and b have one depth: b's priority 10 puts it after a (priority 1), so b wins.
    assert inv.host_vars["h"] == {"ansible_user": "b", "fleet_workdir": "b", "fleet_python": "deep"}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("h.ini", "[pi:things]\nh1\n", r"h.ini:1: section \[pi:things\] has an unknown type"),
        ("h.ini", "[pi group]\n", r"h.ini:1: invalid section '\[pi group\]'"),
        ("h.ini", "[pi]\nh1 port\n", r"h.ini:2: expected key=value after the host name"),
        ("h.ini", "[pi:vars]\nx=1\n", r"h.ini:1: \[pi:vars\] is for a group that is never"),
        ("h.ini", "[e:children]\npi\n", r"h.ini:2: \[e:children\] names 'pi', a group that"),
        ("h.ini", "[pi]\nh1 ansible_port=ssh\n", r"h.ini:2: ansible_port of 'h1' must be"),
        ("h.ini", "[pi]\np[01:3]\n", r"h.ini:2: host range \[01:3\]: begin and end need"),
        ("h.ini", "[pi]\np[0:99999]\n", r"h.ini:2: host range \[0:99999\] makes 100000 hosts"),
        ("h.ini", "[pi]\np[x:1]\n", r"h.ini:2: host range \[x:1\] must be numbers"),
        ("h.ini", "[pi]\nh1 a='b\n", r"h.ini:2: cannot read this host line"),
        ("h.yaml", "a:\n  children:\n    a:\n", r"h.yaml:3: group 'a' as a child of 'a'"),
        ("h.yaml", "all:\n  hosts:\n    p[1:2:0]:\n", r"h.yaml:3: host range \[1:2:0\]"),
        ("h", "[pi]\nh:22\n", r"h:2: host name 'h:22' must be"),
    ],
)
def test_bad_ini_and_ranges_name_file_and_line(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as error:
        load_inventory(path)
    assert "\n" not in str(error.value)


def test_a_bad_variable_in_group_vars_names_that_file(tmp_path: Path) -> None:
    path = write(tmp_path, "all:\n  children:\n    pi:\n      hosts:\n        p1:\n")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "pi.yml").write_text("# pis\nfleet_class: toaster\n")
    with pytest.raises(ConfigError, match=r"group_vars/pi.yml:2: fleet_class 'toaster' of 'p1'"):
        load_inventory(path)
    (tmp_path / "group_vars" / "pi.yml").write_text("- a list\n")
    with pytest.raises(ConfigError, match=r"group_vars/pi.yml:1: group_vars file must be a"):
        load_inventory(path)


@pytest.mark.parametrize(
    ("pattern", "chosen"),
    [
        ("pi:&edge", ["pi5-a", "pi5-b"]),
        ("all:!pi", ["orin-nano", "mac-mini-m2", "gpu-server"]),
        ("!pi:!mac:!gpu", ["orin-nano"]),
        ("pi5-*", ["pi5-a", "pi5-b"]),
        ("~^(mac|gpu)", ["mac-mini-m2", "gpu-server"]),
        ("pi[1]", ["pi5-b"]),
        ("all[0:1]", ["pi5-a", "pi5-b"]),
        ("cuda:&jetson", ["orin-nano"]),  # fleet's tags mix with Ansible's patterns
        ("*", ["pi5-a", "pi5-b", "orin-nano", "mac-mini-m2", "gpu-server"]),  # not `local`
        ("local", ["local"]),
    ],
)
def test_host_patterns(pattern: str, chosen: list[str]) -> None:
    inv = load_inventory(ROOT / "inventory" / "example.yaml")
    assert [d.name for d in inv.select([pattern])] == chosen


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("pi:&tpu", r"no device matches 'tpu'; known groups: all, gpu, jetson"),
        ("pi:!nope", r"no device matches 'nope'; known groups:"),
        ("pi:&gpu", r"the pattern 'pi:&gpu' selects no device; known groups: all, gpu"),
        ("pi[7]", r"no device matches the subscript of 'pi': it has 2"),
        ("~(", r"device pattern '~\(' is not a valid regular expression"),
    ],
)
def test_a_pattern_that_selects_nothing_says_so(pattern: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_inventory(ROOT / "inventory" / "example.yaml").select([pattern])


def test_a_folder_reads_yaml_and_ini_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("all:\n  hosts:\n    h1: {}\n")
    (tmp_path / "b.ini").write_text("[pi]\nh2\n")
    (tmp_path / "known_hosts").write_text("")  # not an inventory file
    inv = load_inventory(tmp_path)
    assert [d.name for d in inv.select(["all"])] == ["h1", "h2"]


@pytest.mark.parametrize("example", ["example.yaml", "example.ini", "site/hosts.yaml"])
def test_every_example_loads(example: str) -> None:
    inv = load_inventory(ROOT / "inventory" / example)
    assert len(inv.select(["all"])) >= 5
