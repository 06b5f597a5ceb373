"""A lab behind a bastion: devices whose sshd listens only inside a network namespace, and
a bastion device (in that namespace too) whose sshd also listens on the namespace's end of a
veth pair: the one address of the namespace this machine's own network can reach. So the
devices can be reached only through an SSH channel forwarded by the bastion."""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fleet import lab as lab_lib

# Inside the namespace the devices take 127.0.0.60 and up: the namespace's own loopback,
# which no address of this machine's loopback reaches.
FIRST_DEVICE = 50
BASTION = 49


@dataclass(frozen=True)
class BastionLab:
    devices: Path  # the devices' lab folder: inventory.yaml, known_hosts, id_ed25519
    bastion: Path  # the bastion's lab folder: its own key, known_hosts and state
    address: str  # the bastion's address, reachable from here
    port: int
    namespace: str

    @property
    def devices_known_hosts(self) -> str:
        return (self.devices / "known_hosts").read_text()

    @property
    def bastion_known_hosts(self) -> str:
        return (self.bastion / "known_hosts").read_text()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _lab_up_inside(namespace: str, folder: Path, count: int, first: int, address: str) -> None:
    """`fleet.lab.up` run in the namespace, so each sshd binds, and is checked, in there."""
    code = (
        "import sys; from pathlib import Path; from fleet import lab;"
        " lab.up(Path(sys.argv[1]), int(sys.argv[2]), first=int(sys.argv[3]),"
        " address=sys.argv[4] or None)"
    )
    argv = [sys.executable, "-c", code, str(folder), str(count), str(first), address]
    subprocess.run(["ip", "netns", "exec", namespace, *argv], check=True)


@contextlib.contextmanager
def bastion_lab(folder: Path, count: int = 2) -> Iterator[BastionLab]:
    """`count` devices and a bastion; the namespace, its veth pair and every sshd are gone
    afterwards, whatever failed on the way."""
    tag = f"{random.randrange(16**6):06x}"
    namespace, outer, inner = f"fleet-jump-{tag}", f"fj{tag}o", f"fj{tag}i"
    subnet = f"10.{random.randrange(200, 255)}.{random.randrange(256)}"
    here, there = f"{subnet}.1", f"{subnet}.2"
    devices, bastion = folder / "devices", folder / "bastion"
    try:
        _ip("netns", "add", namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", namespace)
        _ip("addr", "add", f"{here}/30", "dev", outer)
        _ip("link", "set", outer, "up")
        _ip("-n", namespace, "addr", "add", f"{there}/30", "dev", inner)
        _ip("-n", namespace, "link", "set", inner, "up")
        _lab_up_inside(namespace, devices, count, FIRST_DEVICE, "")
        _lab_up_inside(namespace, bastion, 1, BASTION, there)
        (jump,) = lab_lib.load(bastion)
        yield BastionLab(devices, bastion, jump.address, jump.port, namespace)
    finally:
        for lab in (devices, bastion):
            if (lab / lab_lib.STATE).exists():
                lab_lib.down(lab)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", namespace)  # takes the veth pair with it
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", outer)  # when the namespace was never made
