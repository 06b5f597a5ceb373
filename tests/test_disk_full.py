"""A full disk loses nothing: not on the store's side (records wait in memory and in a spill
file that `fleet results import` reads back; the run ends with exit 2 and a status), not on
the device's (the latency measured is kept when only saving the outputs failed).

Each test fills a real small file system: a 2 MiB tmpfs (as root), else a loop-mounted ext2
image; where neither can be mounted (not root, no loop device), it is skipped with the reason.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from jobs import make_case, of, serve, settings

from fleet.errors import ConfigError
from fleet.inventory import local_device
from fleet.plan import make_plan
from fleet.results import store as store_module
from fleet.results.record import make_record
from fleet.results.store import Store, StoreFullError
from fleet.suite import load_suite
from fleet_agent import accuracy

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo"


class Disk:
    """A small mounted file system that a test can fill up and free again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ballast = root / "ballast"

    def fill(self) -> None:
        """Write until the file system refuses even one byte more."""
        with self.ballast.open("ab", buffering=0) as handle:
            for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
                with pytest.raises(OSError, match="No space left") as full:  # noqa: PT012
                    while True:
                        handle.write(b"\xa5" * chunk)
                assert full.value.errno == errno.ENOSPC
        assert os.statvfs(self.root).f_bavail == 0

    def free(self) -> None:
        self.ballast.unlink()


def _fails(argv: list[str]) -> str | None:
    """None when the command succeeds, else why not."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        return f"{argv[0]}: {exc}"
    return None if done.returncode == 0 else f"{argv[0]}: {done.stderr.strip() or done.returncode}"


def _mount(target: Path, image: Path) -> str | None:
    """Mount a 2 MiB tmpfs on target, else a 4 MiB ext2 loop file; None, or why neither."""
    why = _fails(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(target)])
    if why is None:
        return None
    with image.open("wb") as handle:
        handle.truncate(4 << 20)
    loop = _fails(["mkfs.ext2", "-q", "-F", str(image)]) or _fails(
        ["mount", "-o", "loop", str(image), str(target)]
    )
    return None if loop is None else f"tmpfs ({why}), loop file ({loop})"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    target = tmp_path / "disk"
    target.mkdir()
    why = _mount(target, tmp_path / "disk.img")
    if why is not None:
        pytest.skip(f"needs a small file system to fill, and mounting one failed: {why}")
    try:
        yield Disk(target)
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


@pytest.fixture
def spill_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$TMPDIR, where the store spills, inside the test (tempfile caches it per process)."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def record(i: int, run_id: str = "R") -> dict[str, object]:
    return {"run_id": run_id, "latency_ms_p50": 0.5 + i, "status": "ok", "note": "x" * 2000}


def test_the_store_keeps_every_record_on_a_full_disk(
    disk: Disk, spill_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "RETRY_S", 0.0)  # try the store with every write
    warnings: list[str] = []
    path = disk.root / "results.sqlite"
    store = Store(path, warn=warnings.append)
    store.start_run("R", "smoke", ["local"])
    assert store.reserve.stat().st_size == store_module.RESERVE_BYTES
    assert store.add(make_record("result", {"device": "a"}, record(0), 1)) > 0
    disk.fill()

    # Full: each record waits in memory and in the spill file, said once.
    for i in (1, 2, 3):
        assert store.add(make_record("result", {"device": "a"}, record(i), 1 + i)) == 0
    spill = spill_dir / "fleet-spill-R.jsonl"
    assert [json.loads(line)["op"] for line in spill.read_text().splitlines()] == ["record"] * 3
    assert warnings == [
        f"no space left on device for the store ({path}): results kept in memory and in"
        f" {spill} ($TMPDIR) and retried with each new one; if the disk stays full:"
        f" `fleet results import {spill} --store {path}`"
    ]

    # Room again: the next write puts every waiting record in the store, the spill file goes.
    disk.free()
    assert store.add(make_record("result", {"device": "a"}, record(4), 5)) > 0
    assert len(store.records("R")) == 5 and not spill.exists()
    assert warnings[-1] == (
        f"the store ({path}) has space again: the 4 record(s) of {spill} are in it now;"
        " removed that file"
    )

    # Full to the end of the run: exit 2 (StoreFullError), the run closed from the reserve.
    disk.fill()
    store.add(make_record("result", {"device": "a"}, record(5), 6))
    store.add(make_record("run", {"suite": "smoke"}, {"run_id": "R", "exit_code": 0}, 7))
    with pytest.raises(StoreFullError) as raised:
        store.finish_run("R", 0)
    assert str(raised.value) == (
        f"no space left on device for the store ({path}): 1 result(s) (2 record(s)) kept in"
        f" {spill} ($TMPDIR); free space, then `fleet results import {spill} --store {path}`"
    )
    assert not store.reserve.exists()
    (run,) = store.runs()
    assert (run.exit_code, run.results) == (2, 5)  # not "running"; 1 result not in yet

    # Read back: everything, the run's own exit code; twice adds nothing twice.
    disk.free()
    assert store.import_spill(spill) == (2, 0)
    assert store.import_spill(spill) == (0, 2)
    (run,) = store.runs()
    assert (run.exit_code, run.results) == (0, 6)
    assert sorted(r.fields["latency_ms_p50"] for r in store.records("R", "result")) == [
        0.5 + i for i in range(6)
    ]


def test_a_store_that_cannot_open_on_a_full_disk_says_so(disk: Disk) -> None:
    path = disk.root / "results.sqlite"
    Store(path).close()
    disk.fill()
    with pytest.raises(ConfigError) as raised:
        Store(path)
    assert str(raised.value) == (
        f"no space left on device for the store ({path}): free some space there, or use"
        " --store on another disk"
    )


def test_a_bad_spill_file_is_one_line_naming_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    spill = tmp_path / "spill.jsonl"
    spill.write_text('{"op": "record", "measurement": "result"}\n')
    with pytest.raises(ConfigError) as raised:
        store.import_spill(spill)
    assert str(raised.value) == f"{spill}:1: not a line of a fleet spill file"


def fleet(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fleet", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_a_run_whose_store_disk_fills_loses_nothing(disk: Disk, tmp_path: Path) -> None:
    """`fleet run` on the built-in `local` device; the store's disk fills as the cases begin."""
    suite_file = tmp_path / "quick.yaml"
    suite_file.write_text(f"""
name: quick
measure: {{warmup_iterations: 5, min_iterations: 100, max_seconds: 2, repetitions: 1}}
models:
  - {{name: mlp, path: {ZOO / "digits_mlp.onnx"}, dataset: {ZOO / "digits_test.npz"}}}
  - {{name: cnn, path: {ZOO / "digits_cnn.onnx"}, dataset: {ZOO / "digits_cnn_test.npz"}}}
""")
    spill_dir = tmp_path / "tmpdir"
    spill_dir.mkdir()
    store = disk.root / "results.sqlite"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env |= {"FLEET_HOME": str(tmp_path / "home"), "FLEET_CACHE": str(tmp_path / "cache")}
    env |= {"TMPDIR": str(spill_dir)}
    planned = make_plan(load_suite(suite_file), [local_device()]).devices[0].cases

    proc = fleet("run", str(suite_file), "--store", str(store), env=env)
    assert proc.stderr is not None
    seen = ""
    while "[local] running" not in seen:  # the run is in the store; the agent starts
        line = proc.stderr.readline()
        assert line, f"the run ended before its cases:\n{seen}"
        seen += line
    disk.fill()
    out, err = proc.communicate(timeout=300)
    err = seen + err

    # Exit 2 with one line saying where the results are (and how to read them back).
    assert proc.returncode == 2, err
    (spill,) = spill_dir.glob("fleet-spill-*.jsonl")
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: no space left on device for the store ({store}): ")
    assert last.endswith(
        f" kept in {spill} ($TMPDIR); free space, then"
        f" `fleet results import {spill} --store {store}`"
    )
    assert f"warning: no space left on device for the store ({store})" in err
    assert "Traceback" not in err

    # The run is closed (exit 2, from the reserve), not "running"; the results are spilled.
    disk.free()  # (a store does not open on a full disk: SQLite's shared memory needs room)
    (run,) = Store(store).runs()
    assert run.exit_code == 2 and run.finished_ns is not None
    spilled = [json.loads(line) for line in spill.read_text().splitlines()]
    results = [op for op in spilled if op.get("measurement") == "result"]
    assert len(results) + run.results == len(planned)
    assert all(op["fields"]["latency_ms_p50"] > 0 for op in results)
    listed = subprocess.run(
        [sys.executable, "-m", "fleet", "results", "list", "--store", str(store)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "running" not in listed.stdout

    # The import puts every measured result in the store, with the run's own exit code.
    imported = fleet("results", "import", str(spill), "--store", str(store), env=env)
    out, err = imported.communicate(timeout=120)
    assert imported.returncode == 0, err
    records = sum(op["op"] == "record" for op in spilled)
    assert out.startswith(f"{records} record(s) from {spill} into {store} (0 already")
    reopened = Store(store)
    (run,) = reopened.runs()
    stored = reopened.records(run.run_id, "result")
    assert run.exit_code in (0, 1) and run.results == len(planned)
    assert {r.tags["model"] for r in stored} == {case.model.name for case in planned}
    assert all(r.fields["status"] == "ok" and r.number("latency_ms_p50") for r in stored)
    assert reopened.records(run.run_id, "run")  # the summary too


def test_outputs_on_a_full_device_disk_keep_the_latency(disk: Disk) -> None:
    """The agent as the controller runs it, its workdir on a full disk: the reference case
    keeps its latency and says the outputs were not saved; the variant after it runs."""
    workdir = disk.root / "work"
    workdir.mkdir()
    # The device ran before: its lock file exists (writing the holder's name reuses a page).
    (workdir / "agent.lock").write_text("run earlier from tester@here since then\n" * 2)
    saved = workdir / "outputs" / "test" / "cnn.npy"
    saved.parent.mkdir(parents=True)  # a folder takes a block on ext2, none on tmpfs
    quick = settings(repetitions=1, min_iterations=20, max_seconds=1.0)
    common = {
        "dataset": str(ZOO / "digits_cnn_test.npz"),
        "inputs": [{"name": "input", "dtype": "float32", "shape": ["batch", 1, 8, 8]}],
        "settings": quick,
    }
    reference = make_case("cnn", ZOO / "digits_cnn.onnx", save_outputs=str(saved), **common)
    variant = make_case("cnn-again", ZOO / "digits_cnn.onnx", reference=str(saved), **common)
    disk.fill()

    events = serve(workdir, [reference, variant])
    assert not of(events, "case_error")
    first, second = (e["fields"] for e in of(events, "result"))
    assert first["latency_ms_p50"] > 0 and first["accuracy_top1"] > 0.9
    assert first["accuracy_error"] == (
        f"outputs not saved: no space left on device ({saved}); the model's other variants"
        " are not compared with them"
    )
    assert second["latency_ms_p50"] > 0 and "agreement_top1" not in second
    assert "accuracy_error" not in second
    assert not saved.exists()  # no partial file for a variant to compare with


def test_saving_outputs_says_which_file_and_leaves_none(disk: Disk) -> None:
    target = disk.root / "out.npy"
    disk.fill()
    problem = accuracy.save(str(target), np.ones((64, 64), dtype=np.float32))
    assert problem == f"no space left on device ({target})"
    assert not target.exists()
