"""A full disk loses nothing: not on the store's side (records wait in memory and in a spill
file that `fleet results import` reads back; the run ends with exit 2 and a status), not on
the device's (the latency measured is kept when only saving the outputs failed). A whole
`fleet run` on a lab device whose store disk fills is a row of the fault matrix
(tests/test_faults_lab.py).

Each test fills a real small file system (tests/disks.py): a 2 MiB tmpfs (as root), else a
loop-mounted ext2 image; where neither can be mounted, it is skipped with the reason.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from disks import Disk, small_disk
from jobs import make_case, of, serve, settings

from fleet.errors import ConfigError
from fleet.results import store as store_module
from fleet.results.record import make_record
from fleet.results.store import Store, StoreFullError
from fleet_agent import accuracy

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    target = tmp_path / "disk"
    target.mkdir()
    with small_disk(target, tmp_path / "disk.img") as mounted:
        yield mounted


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
