"""Issue 13 on the lab (real sshd, real onnxruntime, real conversions): a two-input encoder
with open [batch, sequence] inputs is timed at the shapes its data set or the suite gives, its
data set keyed by input name is scored on the device, each int8 mode is its own series, and
a failed LiteRT case is shown under the provider that runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from encoder import encoder, sentences
from jobs import make_case, of, serve

from fleet import lab as lab_lib
from fleet.cli import main
from fleet.results.compare import compare_table
from fleet.results.store import Store
from fleet.results.tables import results_table

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo"

pytestmark = pytest.mark.slow

# A busy machine: every result counts as valid (validity is tested elsewhere).
MEASURE = {
    "warmup_iterations": 5,
    "min_iterations": 50,
    "max_seconds": 10,
    "repetitions": 1,
    "cv_max": 1000,
    "drift_max": 1000,
    "repetition_cv_max": 1000,
    "cpu_wait_max": 1000,
}


def run(folder: Path, suite: dict[str, object], devices: str = "lab") -> tuple[int, str, Store]:
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    store = folder / "results.sqlite"
    args = ["run", str(path), "--inventory", str(folder / "lab" / "inventory.yaml")]
    result = CliRunner().invoke(main, [*args, "--devices", devices, "--store", str(store)])
    return result.exit_code, result.output, Store(store)


@pytest.fixture
def lab1(tmp_path: Path):
    lab_lib.up(tmp_path / "lab", 1)
    try:
        yield tmp_path
    finally:
        lab_lib.down(tmp_path / "lab")


def test_an_encoder_runs_at_its_data_sets_shape_scored_on_data_keyed_by_input_name(
    lab1: Path, fleet_home: Path
) -> None:
    """Defects 1, 2 and 5 of issue 13. Before: the open sequence axis was fed as 1 (this
    encoder cannot run on fewer than 32 tokens, so every case failed where a real one would
    have timed one token), the device refused a data set keyed by input name, and both int8
    modes were stored as `onnx:int8`, one series."""
    encoder(lab1 / "encoder.onnx")
    sentences(lab1 / "sentences.npz", tokens=40)
    suite = {
        "name": "encoders",
        "measure": MEASURE,
        "models": [
            {
                "name": "enc",
                "path": "encoder.onnx",
                "dataset": "sentences.npz",  # input_ids, attention_mask: [24, 40]
                "calibration": "sentences.npz",
                # LiteRT too: its file takes the inputs in another order, under other names.
                "variants": ["onnx:fp32", "onnx:int8-static", "onnx:int8-dynamic", "tflite:fp32"],
            }
        ],
    }
    code, output, store = run(lab1, suite)
    assert code == 0, output
    results = store.records(measurement="result")
    by_variant = {r.tags["variant"]: r for r in results}
    assert sorted(by_variant) == [
        "onnx:fp32",
        "onnx:int8-dynamic",
        "onnx:int8-static",
        "tflite:fp32",
    ]
    for variant, record in by_variant.items():
        fields = record.fields
        assert record.status == "ok", fields.get("message")
        assert record.tags["precision"] == variant.partition(":")[2][:4]
        assert record.tags["provider"] == ("xnnpack" if variant == "tflite:fp32" else "cpu")
        # The data set's 40 tokens: the shape timed, recorded, and part of the series.
        assert record.tags["shape"] == "input_ids=1x40,attention_mask=1x40"
        assert fields["input_shapes"] == record.tags["shape"]
        assert fields["latency_ms_p50"] > 0
        # Scored on the device from the arrays named after the inputs.
        assert fields["accuracy_samples"] == 24.0 and "accuracy_error" not in fields
        if variant != "onnx:fp32":
            assert fields["cosine_min"] > (0.999 if variant == "tflite:fp32" else 0.9)
    # Two int8 modes, two rows: in the run's table and in compare.
    table = results_table(results)
    assert "onnx:int8-static" in table and "onnx:int8-dynamic" in table
    compared = compare_table(store, by="device").splitlines()
    rows = {line.split()[1]: line for line in compared[2:]}
    assert sorted(rows) == sorted(by_variant)
    assert compare_table(store, by="precision").splitlines()[1].split()[-3:] == [
        "fp32",
        "int8-dynamic",
        "int8-static",
    ]


def test_a_sweep_of_sequence_lengths_is_a_series_per_length(lab1: Path, fleet_home: Path) -> None:
    encoder(lab1 / "encoder.onnx")
    suite = {
        "name": "sweep",
        "measure": MEASURE,
        "models": [
            {
                "name": "enc",
                "path": "encoder.onnx",
                "sequence_lengths": [32, 128],
                "variants": ["onnx:fp32", "onnx:int8-dynamic"],
            }
        ],
    }
    code, output, store = run(lab1, suite)
    assert code == 0, output
    assert "enc/onnx:int8-dynamic@seq=128" in output  # progress names each case
    results = store.records(measurement="result")
    series = {(r.tags["variant"], r.tags["shape"]): r.status for r in results}
    assert series == {
        ("onnx:fp32", "input_ids=1x32,attention_mask=1x32"): "ok",
        ("onnx:fp32", "input_ids=1x128,attention_mask=1x128"): "ok",
        ("onnx:int8-dynamic", "input_ids=1x32,attention_mask=1x32"): "ok",
        ("onnx:int8-dynamic", "input_ids=1x128,attention_mask=1x128"): "ok",
    }
    table = compare_table(store, by="shape").splitlines()
    assert table[1].split()[-2:] == [
        "input_ids=1x128,attention_mask=1x128",
        "input_ids=1x32,attention_mask=1x32",
    ]
    assert len(table) == 2 + 2  # a row per variant, a column per shape


def test_a_failed_litert_case_is_shown_under_the_provider_that_runs(
    lab1: Path, fleet_home: Path
) -> None:
    """Defect 8 of issue 13: LiteRT's CPU path is XNNPACK. A result said `xnnpack`, a case
    that failed said `cpu` (what the suite asked for), and compare split one series in two."""
    suite = {
        "name": "providers",
        "measure": MEASURE,
        # The lab device's cases time out; the local device's run.
        "classes": {"lab": {"measure": {"timeout_s": 0.001}}},
        "models": [
            {"name": "mlp", "path": str(ZOO / "digits_mlp.onnx"), "variants": ["tflite:fp32"]}
        ],
    }
    code, output, store = run(lab1, suite, devices="local,lab")
    assert code == 1, output  # a timeout is a finding about the model on that device
    results = {r.tags["device"]: r for r in store.records(measurement="result")}
    assert results["local"].status == "ok" and results["lab1"].status == "timeout"
    assert {r.tags["provider"] for r in results.values()} == {"xnnpack"}
    _title, header, *rows = compare_table(store).splitlines()
    assert header.split()[-2:] == ["lab1", "local"]
    (row,) = rows  # one series, both devices side by side
    assert row.split()[-2] == "timeout" and float(row.split()[-1]) > 0


def test_scoring_that_fails_on_the_device_keeps_the_latency(tmp_path: Path) -> None:
    """The agent itself (real onnxruntime, its events checked against the protocol's types):
    the data set fits the model's inputs (names, dtypes, ranks), but its 20-token sentences
    are too short for this encoder. Timing, at 64 tokens, stands; scoring says which step
    failed on which data set (the controller puts the user's file in place of the device's
    copy: tests/test_shapes.py). Before, the case ended in an error and its latency was lost."""
    model = encoder(tmp_path / "encoder.onnx")
    ids = np.ones((8, 20), np.int64)
    np.savez(tmp_path / "short.npz", input_ids=ids, attention_mask=ids)
    inputs = [
        {"name": name, "shape": [1, 64], "dtype": "int64"}
        for name in ("input_ids", "attention_mask")
    ]
    case = make_case("enc", model, dataset=str(tmp_path / "short.npz"), inputs=inputs)
    (result,) = of(serve(tmp_path, [case]), "result")
    fields = result["fields"]
    assert fields["latency_ms_p50"] > 0 and fields["iterations"] >= 50
    problem = fields["accuracy_error"]
    assert problem.startswith(f"accuracy step failed on data set {tmp_path / 'short.npz'}: ")
    assert "Gather" in problem and "accuracy_samples" not in fields


def test_the_agent_scores_a_data_set_keyed_by_input_name(tmp_path: Path) -> None:
    """Defect 2 of issue 13, on the agent alone: `fleet convert` and the suite accept one
    array per input name, the agent accepted only `inputs` and ended the case in an error."""
    model = encoder(tmp_path / "encoder.onnx")
    data = sentences(tmp_path / "sentences.npz", tokens=40, labels=np.arange(24) % 16)
    inputs = [
        {"name": name, "shape": [1, 40], "dtype": "int64"}
        for name in ("input_ids", "attention_mask")
    ]
    reference = str(tmp_path / "outputs" / "test" / "encoder.npy")  # where a run keeps it
    fp32 = make_case("fp32", model, dataset=str(data), inputs=inputs, save_outputs=reference)
    again = make_case("again", model, dataset=str(data), inputs=inputs, reference=reference)
    results = of(serve(tmp_path, [fp32, again]), "result")
    for result in results:
        fields = result["fields"]
        assert fields["accuracy_samples"] == 24.0 and "accuracy_error" not in fields
        assert 0 <= fields["accuracy_top1"] <= 1  # labels beside the named arrays
    assert results[1]["fields"]["cosine_min"] == pytest.approx(1.0)  # the same model
