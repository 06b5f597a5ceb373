"""The lab: simulated devices on this machine, each a real OpenSSH sshd on 127.0.0.x.

Devices differ the way hardware does: each is pinned to its own CPU core(s) with taskset
and gets its own memory cap (a cgroup memory limit, where this machine lets us create one),
so a run over the lab exercises the same SSH, agent and store paths as a real fleet.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from fleet.errors import ConfigError, FleetError

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself and so needs its absolute path
STATE = "lab.json"
FORWARDED_ENV = ("COVERAGE_PROCESS_START", "COVERAGE_FILE")
# Memory caps handed out in turn, like a fleet of 8, 4 and 2 GB boards.
MEMORY_CAPS_MB = (8192, 4096, 2048)


@dataclass(frozen=True)
class LabDevice:
    name: str
    address: str
    port: int
    cpus: str
    memory_mb: int | None  # None: no cgroup could be made here, so no cap
    python: str
    workdir: str
    pid: int
    cgroup: str | None


def up(
    folder: Path,
    count: int,
    pythons: list[str] | None = None,
    first: int = 1,
    memory_mb: int | None = None,
    address: str | None = None,
) -> list[LabDevice]:
    """Start `count` devices; write inventory.yaml, known_hosts and the lab state.

    `memory_mb` gives every device that memory cap instead of 8, 4 and 2 GB in turn (a small
    board, or a device made to run out of memory). `address` is the one every device listens
    on instead of its own 127.0.0.x (a bastion on a network namespace's outer address)."""
    if count < 1:
        raise ConfigError("a lab needs at least one device (--devices N)")
    if not Path(SSHD).exists():
        raise FleetError(f"{SSHD} not found; install it: apt-get install openssh-server")
    folder = folder.resolve()
    if (folder / STATE).exists():
        raise ConfigError(f"{folder}: a lab is already there; run `fleet lab down --dir {folder}`")
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    client_key = folder / "id_ed25519"
    _keygen(client_key)
    shutil.copyfile(client_key.with_suffix(".pub"), folder / "authorized_keys")
    cores = sorted(os.sched_getaffinity(0))
    devices: list[LabDevice] = []
    try:
        for i in range(count):
            devices.append(
                _start(
                    folder,
                    f"lab{first + i}",
                    first + i,
                    cores[i % len(cores)],
                    memory_mb or MEMORY_CAPS_MB[i % len(MEMORY_CAPS_MB)],
                    (pythons or [sys.executable])[i % len(pythons or [sys.executable])],
                    address,
                )
            )
    finally:
        (folder / STATE).write_text(json.dumps([asdict(d) for d in devices], indent=2))
    _write_inventory(folder, devices)
    return devices


def _keygen(path: Path) -> None:
    """A fresh key pair; a lab started again in the same folder gets new keys."""
    path.unlink(missing_ok=True)
    path.with_suffix(".pub").unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleet-lab", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _start(
    folder: Path,
    name: str,
    index: int,
    core: int,
    memory_mb: int,
    python: str,
    address: str | None,
) -> LabDevice:
    home = folder / name
    workdir = home / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = home / "ssh_host_ed25519_key"
    _keygen(host_key)
    address = address or f"127.0.0.{10 + index}"
    port = _free_port(address)
    config = home / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                f"ListenAddress {address}",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                f"PidFile {home / 'sshd.pid'}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",  # the lab folder may sit under /tmp
                "PermitRootLogin prohibit-password",
                "Subsystem sftp internal-sftp",
                *_forwarded_env(),
                "",
            ]
        )
    )
    proc = subprocess.Popen(
        ["taskset", "-c", str(core), SSHD, "-D", "-f", str(config), "-E", str(home / "sshd.log")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # outlives `fleet lab up`
    )
    cgroup = _memory_cgroup(name, folder, proc.pid, memory_mb)
    _wait_listening(address, port, proc, home / "sshd.log")
    return LabDevice(
        name,
        address,
        port,
        str(core),
        memory_mb if cgroup else None,
        python,
        str(workdir),
        proc.pid,
        cgroup,
    )


def _forwarded_env() -> list[str]:
    """sshd starts sessions with a clean environment; coverage settings are passed on so
    that agent code running on lab devices is measured along with the tests."""
    values = [f'{k}="{os.environ[k]}"' for k in FORWARDED_ENV if k in os.environ]
    return [f"SetEnv {' '.join(values)}"] if values else []


def _memory_cgroup(name: str, folder: Path, pid: int, memory_mb: int) -> str | None:
    """Put sshd (and so every session it starts) in a memory-capped cgroup, if allowed."""
    base = _own_memory_cgroup()
    if base is None:
        return None
    group = base / f"fleet-lab-{hashlib.sha256(bytes(folder)).hexdigest()[:8]}-{name}"
    limit = str(memory_mb * 1024 * 1024)
    try:
        group.mkdir(exist_ok=True)
        v1 = (group / "memory.limit_in_bytes").exists()
        (group / ("memory.limit_in_bytes" if v1 else "memory.max")).write_text(limit)
        (group / "cgroup.procs").write_text(str(pid))
    except OSError:
        return None
    return str(group)


def _own_memory_cgroup() -> Path | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            return base if base.is_dir() and os.access(base, os.W_OK) else None
    unified = Path("/sys/fs/cgroup") / lines[-1].split(":", 2)[2].lstrip("/")
    if (
        "memory" in (unified / "cgroup.subtree_control").read_text()
        if (unified / "cgroup.subtree_control").exists()
        else False
    ):
        return unified if os.access(unified, os.W_OK) else None
    return None


def _wait_listening(address: str, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60  # a busy machine starts a few hundred sshd slowly
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FleetError(f"sshd for {address}:{port} exited: {_tail(log)}")
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise FleetError(f"sshd for {address}:{port} did not start listening: {_tail(log)}")


def _tail(path: Path) -> str:
    try:
        return " | ".join(path.read_text().strip().splitlines()[-3:])
    except OSError:
        return "(no log)"


def _write_inventory(folder: Path, devices: list[LabDevice]) -> None:
    hosts = {
        d.name: {
            "ansible_host": d.address,
            "ansible_port": d.port,
            "ansible_user": getpass.getuser(),
            "ansible_ssh_private_key_file": str(folder / "id_ed25519"),
            "fleet_class": "lab",
            "fleet_python": d.python,
            "fleet_workdir": d.workdir,
            "fleet_tags": [f"cpu{d.cpus}"] + ([f"mem{d.memory_mb}mb"] if d.memory_mb else []),
        }
        for d in devices
    }
    inventory = {"all": {"children": {"lab": {"hosts": hosts}}}}
    (folder / "inventory.yaml").write_text(
        "# Written by `fleet lab up`; valid until `fleet lab down`.\n"
        + yaml.safe_dump(inventory, sort_keys=False)
    )
    known = []
    for d in devices:
        key = (folder / d.name / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        known.append(f"[{d.address}]:{d.port} {' '.join(key)}")
    (folder / "known_hosts").write_text("\n".join(known) + "\n")


def load(folder: Path) -> list[LabDevice]:
    state = folder / STATE
    if not state.exists():
        raise ConfigError(f"{folder}: no lab here (start one with `fleet lab up --dir {folder}`)")
    return [LabDevice(**d) for d in json.loads(state.read_text())]


def status(folder: Path) -> list[tuple[LabDevice, bool]]:
    """Each device and whether its sshd accepts connections."""
    result = []
    for device in load(folder):
        try:
            with socket.create_connection((device.address, device.port), timeout=1):
                result.append((device, True))
        except OSError:
            result.append((device, False))
    return result


def stop_device(device: LabDevice) -> None:
    """Stop one device's sshd and everything it started (sessions, agents, workers)."""
    pids = [*_descendants(device.pid), device.pid] if _is_our_sshd(device) else []
    if device.cgroup:
        procs = Path(device.cgroup) / "cgroup.procs"
        if procs.exists():
            pids += [int(p) for p in procs.read_text().split()]
    for pid in set(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _reap(device.pid)
    if device.cgroup:
        _remove_cgroup(Path(device.cgroup))


def _is_our_sshd(device: LabDevice) -> bool:
    """The recorded pid may be stale (a reboot, or the lab already stopped) and reused by
    an unrelated process: only an sshd running this device's config is ours to kill."""
    config = str(Path(device.workdir).parent / "sshd_config")
    try:
        cmdline = Path(f"/proc/{device.pid}/cmdline").read_bytes()
    except OSError:
        return False
    # sshd rewrites its title ("sshd: /usr/sbin/sshd -D -f CONFIG ..."): a substring test.
    return config.encode() in cmdline


def _remove_cgroup(group: Path) -> None:
    deadline = time.monotonic() + 5
    while group.exists() and time.monotonic() < deadline:
        try:
            group.rmdir()  # fails while the killed processes are still being torn down
        except OSError:
            time.sleep(0.05)


def _reap(pid: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return
        except ChildProcessError:  # not our child (another `fleet` started it)
            if not Path(f"/proc/{pid}").exists():
                return
        time.sleep(0.02)


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def down(folder: Path) -> list[str]:
    """Stop every device of the lab and remove its state; the names stopped."""
    folder = folder.resolve()
    devices = load(folder)
    for device in devices:
        stop_device(device)
    (folder / STATE).unlink()
    return [d.name for d in devices]
