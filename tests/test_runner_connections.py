"""The runner's connections and conversions: a device's connection kept from one run to the
next when the caller keeps it (the pytest plugin), a connection that broke replaced, and a
variant the converter cannot make stored as an error while the run's other variants run.

Real parts: the built-in `local` device, the lab's sshd devices, the real converter.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from fleet.connections import Connections
from fleet.inventory import Device, load_inventory, local_device
from fleet.plan import make_plan
from fleet.results.store import Store
from fleet.runner import run_suite
from fleet.suite import load_suite

ZOO = Path(__file__).resolve().parents[1] / "zoo"
QUICK = {"warmup_iterations": 1, "min_iterations": 20, "repetitions": 1}


def suite_file(folder: Path, variants: list[str]) -> Path:
    path = folder / "suite.yaml"
    model = {"name": "digits_mlp", "path": str(ZOO / "digits_mlp.onnx"), "variants": variants}
    path.write_text(yaml.safe_dump({"name": "conns", "measure": QUICK, "models": [model]}))
    return path


def two_devices(lab: Path) -> list[Device]:
    return load_inventory(lab / "inventory.yaml").select(["lab1", "lab2"])


def accepted_logins(lab: Path, device: str) -> int:
    """Logins the device's sshd accepted: one per SSH connection."""
    return (lab / device / "sshd.log").read_text().count("Accepted publickey")


def test_kept_connections_are_reused_until_dropped_and_closed_without_keep() -> None:
    device = local_device()
    kept = Connections(keep=True)
    first = kept.open(device)
    kept.release(device)
    assert kept.open(device) is first and kept.opened == 1
    kept.drop(device)  # as a failed attempt does: the next run connects afresh
    assert kept.open(device) is not first and kept.opened == 2
    kept.close()

    per_run = Connections()  # fleet run's: each device's connection ends with its run
    transport = per_run.open(device)
    per_run.release(device)
    assert per_run.open(device) is not transport and per_run.opened == 2
    per_run.close()


def test_runs_given_kept_connections_log_in_once_per_device(
    lab: Path, tmp_path: Path, fleet_home: Path
) -> None:
    devices = two_devices(lab)
    plan = make_plan(load_suite(suite_file(tmp_path, ["onnx:fp32"])), devices)
    store = Store(tmp_path / "results.sqlite")
    before = {d.name: accepted_logins(lab, d.name) for d in devices}
    connections = Connections(keep=True)
    try:
        outcomes = [run_suite(plan, store, connections=connections) for _ in range(3)]
        assert [o.exit_code for o in outcomes] == [0, 0, 0]
        # Three runs, each its own agent and lock, on one login per device.
        assert connections.opened == 2
        assert {d.name: accepted_logins(lab, d.name) - before[d.name] for d in devices} == {
            d.name: 1 for d in devices
        }

        # A connection that broke between runs is replaced, not used.
        connections.open(devices[0]).close()
        assert run_suite(plan, store, connections=connections).exit_code == 0
        assert connections.opened == 3
    finally:
        connections.close()

    # Without kept connections (fleet run), each run logs in anew.
    run_suite(plan, store)
    assert accepted_logins(lab, devices[0].name) - before[devices[0].name] == 3


def test_a_variant_the_converter_cannot_make_is_an_error_record_while_the_others_run(
    lab: Path, tmp_path: Path, fleet_home: Path
) -> None:
    """digits_mlp has Gemm layers only: onnx:int4 (MatMulNBits) has nothing to pack, and
    the converter says so. Its case is stored as an error of kind `conversion`, on every
    device, while onnx:fp32 is measured."""
    devices = two_devices(lab)
    suite = load_suite(suite_file(tmp_path, ["onnx:fp32", "onnx:int4"]))
    store = Store(tmp_path / "results.sqlite")
    outcome = run_suite(make_plan(suite, devices), store)

    assert outcome.device_errors == {}
    assert outcome.exit_code == 2  # a case that could not run is an error of the run
    by_variant: dict[str, list[dict[str, object]]] = {}
    for record in store.records(outcome.run_id, "result"):
        by_variant.setdefault(record.tags["variant"], []).append(dict(record.fields))
    assert [f["status"] for f in by_variant["onnx:fp32"]] == ["ok", "ok"]
    failed = by_variant["onnx:int4-block32"]
    assert len(failed) == 2
    for fields in failed:
        assert fields["status"] == "error" and fields["error_kind"] == "conversion"
        assert fields["passed"] is False and "model_sha256" not in fields
        message = str(fields["message"])
        assert message.startswith("digits_mlp onnx:int4 could not be converted: ")
        assert "no MatMul with a constant 2-D weight to pack in 4 bits" in message
