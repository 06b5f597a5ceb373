"""fleet reads inventories as Ansible does: for the examples and for tricky inventories,
the hosts, groups and variables fleet resolves equal `ansible-inventory --list` from a real
ansible-core, and `--devices PATTERN` selects what `ansible PATTERN --list-hosts` lists.

ansible-core runs from its own venv (tests/test_ansible.py builds it once, under fleet's
cache). One ansible-inventory call per inventory; the patterns of all inventories go
through one Python process of that venv (InventoryManager.list_hosts, what `ansible
--list-hosts` calls), and one `ansible --list-hosts` call checks that process against the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from test_ansible import ansible_playbook  # noqa: F401 - the venv's fixture

from fleet.errors import ConfigError
from fleet.inventory import LOCAL, Inventory, load_inventory

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

# Tricky inventories, as Ansible users write them: {file: text} under one folder each.
NESTED_YAML = {
    "hosts.yml": """
        all:
          vars: {ansible_user: root-user, fleet_workdir: all-inv, level: all-inv}
          hosts:
            solo: {ansible_host: 10.0.0.9}
          children:
            site:
              vars: {level: site-inv, ansible_user: site-user}
              children:
                edge:
                  vars: {level: edge-inv, fleet_class: pi, mood: edge}
                  hosts:
                    pi[01:03]: {ansible_port: 2201}
                    both: {ansible_host: 10.0.0.5, ansible_port: 2205}
                    node-[a:c]:
                    step[1:9:4]:
                arm:
                  vars: {fleet_class: jetson, mood: arm, ansible_group_priority: 5}
                  hosts:
                    both: {ansible_port: 2206}
                    jet01:
                zeta:
                  vars: {mood: zeta}
                  hosts:
                    both:
            gpu:
              hosts:
                gpu-1: {ansible_host: 192.0.2.41, ansible_port: 2222, fleet_class: gpu}
                both:
        """,
    "group_vars/all.yml": "level: all-file\nansible_ssh_private_key_file: keys/fleet\n",
    "group_vars/edge/10-first.yml": "edge_one: 1\nfile_order: first\n",
    "group_vars/edge/20-second.yaml": "file_order: second\nfleet_tags: [arm64, edge]\n",
    "group_vars/edge/nested/30-third": "file_order: third\n",
    "group_vars/edge/skipped.txt": "file_order: not-read\n",
    "group_vars/gpu.json": '{"fleet_tags": ["cuda"], "mood": "gpu"}',
    # Only the inventory sets a group's priority: here it is a plain variable.
    "group_vars/zeta": "zeta_var: {a: 1, b: [x, y]}\nansible_group_priority: 99\n",
    "host_vars/pi02.yml": "ansible_port: 2299\nlevel: host-file\n",
    "host_vars/both/a.yml": "fleet_python: /opt/py/bin/python\n",
    "host_vars/both/b.yml": "fleet_python: /opt/py2/bin/python\n",
}
INI = {
    "hosts": """
        # before any section: ungrouped
        loose ansible_host=10.1.0.1 ansible_port=2022
        ; a comment
        [pi]
        pi[01:04] fleet_class=pi
        shared ansible_host=10.1.0.9 mood=pi-host

        [jetson]
        jet-[a:b] fleet_class=jetson
        shared mood=jetson-host port_text='22'

        [edge:children]
        pi
        jetson
        later

        [later]
        late1 fleet_tags="['arm64', 'late']" flag=True number=1.5

        [arm:children]
        edge

        [arm:vars]
        ansible_user = arm-user
        mood=arm
        answer=42
        listed=[1, 'two']

        [edge:vars]
        mood=edge
        ansible_group_priority=3

        [pi:vars]
        fleet_python=/usr/bin/python3

        [all:vars]
        ansible_user=fleet
        fleet_workdir=work dir
        """,
    "group_vars/jetson.yml": "ansible_user: jetson-user\n",
    "host_vars/late1": "ansible_host: 10.1.0.77\n",
}
TOP_LEVEL_GROUPS = {
    "inventory.yaml": """
        pis:
          hosts:
            p1: {ansible_host: 10.2.0.1}
            p2:
          vars: {fleet_class: pi}
        gpus:
          hosts:
            g1: {fleet_class: gpu}
          children:
            pis:
        """,
}
FOLDER = {
    "10-base.yaml": """
        all:
          children:
            pi:
              hosts:
                pi-[1:3]: {fleet_class: pi}
        """,
    "20-more.ini": """
        [gpu]
        gpu-[a:b] fleet_class=gpu
        [fast:children]
        gpu
        [pi]
        pi-4
        """,
    "group_vars/fast.yml": "fleet_tags: [fast]\n",
    "group_vars/pi/main.yml": "ansible_user: pi\n",
    "host_vars/pi-4.yaml": "fleet_tags: [new]\n",
}
INVENTORIES = {
    "example.yaml": ROOT / "inventory" / "example.yaml",
    "example.ini": ROOT / "inventory" / "example.ini",
    "site": ROOT / "inventory" / "site" / "hosts.yaml",
    "nested": ("hosts.yml", NESTED_YAML),
    "ini": ("hosts", INI),
    "top-level": ("inventory.yaml", TOP_LEVEL_GROUPS),
    "folder": (".", FOLDER),
}
PATTERNS = {
    "example.yaml": [
        "all",
        "pi",
        "pi:jetson",
        "pi:&pi5-b",
        "all:!jetson",
        "*",
        "pi*",
        "~^(mac|gpu)-",
        "gpu-server,pi",
        "all:!pi:!gpu*",
        "&pi",
        "!mac",
    ],
    "example.ini": [
        "edge",
        "edge:&pi",
        "all:!edge",
        "pi5-*",
        "pi[0]",
        "all[1:3]",
        "edge[1:]",
        "*-nano:gpu",
        "pi5-[ab]",
    ],
    "site": ["edge:!pi-03", "pi:&edge", "orin-*:gpu-1", "~pi-0[12]", "all:!edge", "edge[-1]"],
    "nested": [
        "site",
        "edge:&arm",
        "arm:!edge",
        "site:!zeta",
        "pi0*:node-b",
        "all:!site",
        "ungrouped",
        "step*",
        "~.*-[ab]$",
        "zeta,gpu",
    ],
    "ini": [
        "edge",
        "arm:!jetson",
        "pi:&jetson",
        "ungrouped",
        "later:loose",
        "jet-*",
        "edge[2:3]",
        "all:!arm",
    ],
    "top-level": ["gpus", "pis", "gpus:!pis", "all", "g*"],
    "folder": ["pi", "fast:pi-4", "all:!fast", "pi-?:&pi"],
}
LIST_HOSTS = """
import json, sys
from ansible.parsing.dataloader import DataLoader
from ansible.inventory.manager import InventoryManager
out = {}
for name, (source, patterns) in json.load(sys.stdin).items():
    manager = InventoryManager(loader=DataLoader(), sources=[source])
    out[name] = {p: [h.name for h in manager.get_hosts(p)] for p in patterns}
print(json.dumps(out))
"""


def _place(name: str, tmp_path: Path) -> Path:
    spec = INVENTORIES[name]
    if isinstance(spec, Path):
        return spec
    main, files = spec
    folder = tmp_path / name
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return folder / main


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",  # a file Ansible cannot read fails
        "ANSIBLE_INVENTORY_ENABLED": "yaml,ini",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_NOCOLOR": "1",
    }


def _members(listing: dict[str, Any]) -> dict[str, set[str]]:
    """Each group of `ansible-inventory --list` with all its hosts, children's included."""

    def hosts(group: str) -> set[str]:
        entry = listing.get(group, {})
        found = set(entry.get("hosts", []))
        for child in entry.get("children", []):
            found |= hosts(child)
        return found

    groups = {g for g in listing if g != "_meta"}
    return {g: hosts(g) for g in groups if hosts(g)}


def _fleet_members(inventory: Inventory) -> dict[str, set[str]]:
    return {g: set(m) for g, m in inventory.groups.items() if m and g != LOCAL}


@pytest.fixture(scope="module")
def ansible_bin(ansible_playbook: Path) -> Path:  # noqa: F811
    return ansible_playbook.parent


@pytest.fixture(scope="module")
def placed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inventories")
    return {name: _place(name, folder) for name in INVENTORIES}


@pytest.fixture(scope="module")
def listed_hosts(ansible_bin: Path, placed: dict[str, Path]) -> dict[str, dict[str, list[str]]]:
    request = {name: (str(placed[name]), PATTERNS[name]) for name in INVENTORIES}
    proc = subprocess.run(
        [str(ansible_bin / "python"), "-c", LIST_HOSTS],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=_env(),
        cwd=placed["nested"].parent.parent,  # no group_vars/ of a playbook folder here
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, dict[str, list[str]]] = json.loads(proc.stdout)
    return result


@pytest.mark.parametrize("name", list(INVENTORIES))
def test_hosts_groups_and_variables_equal_ansible_inventory(
    name: str, ansible_bin: Path, placed: dict[str, Path]
) -> None:
    source = placed[name]
    proc = subprocess.run(
        [str(ansible_bin / "ansible-inventory"), "-i", str(source), "--list"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=placed["nested"].parent.parent,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    inventory = load_inventory(source)
    assert inventory.host_vars == listing["_meta"]["hostvars"]
    assert sorted(inventory.host_vars) == sorted(listing["_meta"]["hostvars"])
    assert _fleet_members(inventory) == _members(listing)


@pytest.mark.parametrize("name", list(INVENTORIES))
def test_device_patterns_select_what_ansible_lists(
    name: str, placed: dict[str, Path], listed_hosts: dict[str, dict[str, list[str]]]
) -> None:
    inventory = load_inventory(placed[name])
    for pattern, expected in listed_hosts[name].items():
        assert expected, f"{pattern} selects nothing in Ansible: not a useful case"
        selected = [d.name for d in inventory.select([pattern])]
        assert selected == expected, pattern
        # --devices splits at ',' before fleet sees it, as Ansible reads the list too.
        assert [d.name for d in inventory.select(pattern.split(","))] == selected, pattern


def test_the_cli_lists_what_the_batch_lists(
    ansible_bin: Path, placed: dict[str, Path], listed_hosts: dict[str, dict[str, list[str]]]
) -> None:
    pattern = "site:!zeta"
    proc = subprocess.run(
        [str(ansible_bin / "ansible"), pattern, "-i", str(placed["nested"]), "--list-hosts"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=placed["nested"].parent.parent,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    listed = [line.strip() for line in proc.stdout.splitlines()[1:] if line.strip()]
    assert listed == listed_hosts["nested"][pattern]
    assert sorted(d.name for d in load_inventory(placed["nested"]).select([pattern])) == sorted(
        listed
    )


def test_a_pattern_term_that_matches_nothing_names_the_groups(placed: dict[str, Path]) -> None:
    inventory = load_inventory(placed["nested"])
    with pytest.raises(ConfigError, match=r"no device matches 'tpu\*'; known groups: .*arm, edge"):
        inventory.select(["edge:&tpu*"])
    with pytest.raises(ConfigError, match=r"'pi01:&gpu' selects no device; known groups: .*zeta"):
        inventory.select(["pi01:&gpu"])
