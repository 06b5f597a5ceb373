"""What a run sends a device, and how few commands it needs: one when the device has every
file (the agent says in its hello what it lacks), a push over SFTP only when something is
missing. On the lab's real sshd; the transport is wrapped only to count what is asked of it.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

import paramiko
import pytest
import yaml
from jobs import make_case, serve

from fleet import connections, runner
from fleet.agent_build import build_agent
from fleet.errors import DeviceError
from fleet.inventory import Device, load_inventory
from fleet.plan import make_plan
from fleet.results.store import Store
from fleet.suite import load_suite
from fleet.transport import Process, Transport, connect
from fleet.transport.hostkeys import KnownHosts
from fleet.transport.ssh import SSHTransport

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "zoo" / "digits_mlp.onnx"
DIGITS = ROOT / "zoo" / "digits_test.npz"


class Counting(Transport):
    """A real transport, with a log of what the run asked of it."""

    opened: ClassVar[list[Counting]] = []

    def __init__(self, device: Device) -> None:
        super().__init__(device)
        self.inner = connect(device)
        self.calls: list[tuple[str, str]] = []
        Counting.opened.append(self)

    def run(self, argv: Sequence[str], stdin: bytes = b"") -> Process:
        self.calls.append(("run", Path(argv[1]).name if len(argv) > 1 else argv[0]))
        return self.inner.run(argv, stdin)

    def exists(self, remote: str) -> bool:
        self.calls.append(("exists", Path(remote).name))
        return self.inner.exists(remote)

    def makedirs(self, remote: str) -> None:
        self.calls.append(("makedirs", remote))
        self.inner.makedirs(remote)

    def put(self, local: Path, remote: str, sent: Callable[[int, int], None] | None = None) -> None:
        self.calls.append(("put", Path(remote).name))
        self.inner.put(local, remote, sent)

    def get(self, remote: str, local: Path) -> None:
        self.inner.get(remote, local)

    def alive(self) -> bool:
        return self.inner.alive()

    def close(self) -> None:
        # No SFTP session was opened unless something had to be sent or looked at.
        self.sftp_opened = isinstance(self.inner, SSHTransport) and self.inner._sftp is not None
        self.inner.close()


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> type[Counting]:
    Counting.opened = []
    monkeypatch.setattr(connections, "connect", Counting)
    return Counting


def suite_file(folder: Path, dataset: bool = True) -> Path:
    model = {"name": "mlp", "path": str(MLP), "variants": ["onnx:fp32"]}
    if dataset:
        model["dataset"] = str(DIGITS)
    suite = {
        "name": "push",
        "measure": {"warmup_iterations": 1, "min_iterations": 10, "repetitions": 1},
        "models": [model],
    }
    path = folder / "push.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def run_on(devices: list[Device], folder: Path, dataset: bool = True) -> runner.RunOutcome:
    plan = make_plan(load_suite(suite_file(folder, dataset)), devices)
    return runner.run_suite(plan, Store(folder / "results.sqlite"))


def lab_devices(lab: Path, *names: str) -> list[Device]:
    return load_inventory(lab / "inventory.yaml").select(list(names))


def test_a_warm_run_is_one_command_per_device_and_no_sftp(
    lab: Path, tmp_path: Path, counting: type[Counting]
) -> None:
    devices = lab_devices(lab, "lab1", "lab2")
    first = run_on(devices, tmp_path)
    assert first.exit_code in (0, 1) and len(first.results) == 2
    agent = build_agent().name
    for transport in counting.opened:  # a new device: the agent could not start, then did
        workdir = transport.device.workdir
        assert transport.calls[0] == ("run", agent)
        assert ("makedirs", f"{workdir}/cache") in transport.calls
        puts = [c for c in transport.calls if c[0] == "put"]
        assert len(puts) == 3 and puts[0] == ("put", agent)  # agent, model, data set
        assert transport.calls[-1] == ("run", agent)

    counting.opened = []
    second = run_on(devices, tmp_path)
    assert second.exit_code in (0, 1) and len(second.results) == 2
    for transport in counting.opened:
        assert transport.calls == [("run", agent)]
        assert not transport.sftp_opened


def test_only_the_files_the_agent_names_are_sent(
    lab: Path, tmp_path: Path, counting: type[Counting]
) -> None:
    (device,) = lab_devices(lab, "lab1")
    run_on([device], tmp_path)
    cache = Path(device.workdir) / "cache"
    (model,) = cache.glob("*.onnx")
    model.unlink()  # as a device whose cache was cleaned, or a new model
    counting.opened = []
    outcome = run_on([device], tmp_path)
    assert outcome.exit_code in (0, 1) and outcome.results[0].status != "error"
    (transport,) = counting.opened
    agent = build_agent().name
    # Nothing looked up: the hello named the file; the folder is there already.
    assert transport.calls == [
        ("run", agent),
        ("makedirs", str(cache)),
        ("put", model.name),
        ("run", agent),
    ]
    assert model.exists()


def test_a_device_without_python_is_blamed_after_one_push(
    lab: Path, tmp_path: Path, counting: type[Counting]
) -> None:
    (device,) = lab_devices(lab, "lab3")
    broken = dataclasses.replace(device, python="/nonexistent/python3")
    outcome = run_on([broken], tmp_path, dataset=False)
    assert outcome.exit_code == 2
    error = outcome.device_errors["lab3"]
    assert "the agent ended without finishing (exit 127)" in str(error)
    assert "/nonexistent/python3" in str(error)
    (transport,) = counting.opened
    runs = [c for c in transport.calls if c[0] == "run"]
    assert len(runs) == 2  # once to find the agent missing, once after sending it
    (result,) = outcome.results
    assert (result.status, result.fields["error_kind"]) == ("error", "agent_lost")


def test_the_local_device_takes_the_same_path(
    tmp_path: Path, fleet_home: Path, counting: type[Counting], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_CACHE", str(tmp_path / "cache"))  # a local device never used
    (local,) = load_inventory(None).select(["local"])
    assert run_on([local], tmp_path, dataset=False).exit_code in (0, 1)
    assert [c[0] for c in counting.opened[0].calls] == [
        "run",  # ends at once: no agent there
        "exists",  # so it is looked for ...
        "exists",  # ... and the model too: the agent could not say
        "makedirs",  # cache/, and the workdir with it
        "put",
        "put",
        "run",
    ]
    counting.opened = []
    assert run_on([local], tmp_path, dataset=False).exit_code in (0, 1)
    assert [c[0] for c in counting.opened[0].calls] == ["run"]


def test_the_agent_names_missing_files_in_its_hello_and_stops_there(tmp_path: Path) -> None:
    present = tmp_path / "present.onnx"
    shutil.copyfile(MLP, present)
    absent = tmp_path / "cache" / "absent.onnx"
    data = tmp_path / "cache" / "absent.npz"
    events = serve(
        tmp_path,
        [make_case("here", present), make_case("gone", absent, dataset=str(data))],
    )
    assert [e["event"] for e in events] == ["hello"]
    assert events[0]["missing"] == sorted([str(absent), str(data)])
    assert not (tmp_path / "agent.lock").exists()  # it took no lock: nothing ran


def test_an_agent_with_every_file_says_none_is_missing(tmp_path: Path) -> None:
    events = serve(tmp_path, [make_case("mlp", MLP)])
    assert events[0]["event"] == "hello" and events[0]["missing"] == []
    assert events[-1]["event"] == "done"


def test_makedirs_over_sftp(lab: Path) -> None:
    (device,) = lab_devices(lab, "lab1")
    transport = connect(device)
    try:
        deep = f"{device.workdir}/a/b/c"
        transport.makedirs(deep)
        transport.makedirs(deep + "/")  # there already: nothing to do
        assert Path(deep).is_dir()
        (Path(device.workdir) / "file").write_text("in the way")
        with pytest.raises(DeviceError, match="making the folder") as refused:
            transport.makedirs(f"{device.workdir}/file/sub")
        assert refused.value.kind == "error"  # the device said no: not worth a retry
    finally:
        transport.close()


def test_known_hosts_read_once_finds_what_paramiko_finds(tmp_path: Path) -> None:
    keys = []
    for name in ("one", "two"):
        path = tmp_path / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        keys.append(" ".join(path.with_suffix(".pub").read_text().split()[:2]))
    lines = [
        "# a comment",
        f"[10.0.0.1]:2222,pi-1 {keys[0]}",
        f"[10.0.0.1]:2222 {keys[1]}",  # a second entry for the name: the first wins
        f"{paramiko.HostKeys.hash_host('[10.0.0.9]:2222')} {keys[1]}",
        "",
    ]
    (tmp_path / "known_hosts").write_text("\n".join(lines))
    theirs = paramiko.HostKeys(str(tmp_path / "known_hosts"))
    # Lines paramiko's loader skips or chokes on (an unreadable key is an exception there).
    lines += ["garbage line", "10.0.0.3 ssh-ed25519 not-base64!"]
    (tmp_path / "known_hosts").write_text("\n".join(lines))
    ours = KnownHosts(tmp_path / "known_hosts")
    for name in ("[10.0.0.1]:2222", "pi-1", "[10.0.0.9]:2222", "10.0.0.3", "nobody"):
        assert ours.keys_of(name) == dict(theirs.lookup(name) or {}), name
    assert ours.keys_of("[10.0.0.1]:2222")["ssh-ed25519"].get_base64() == keys[0].split()[1]
    assert ours.keys_of("[10.0.0.9]:2222")["ssh-ed25519"].get_base64() == keys[1].split()[1]
