"""Issue 13: the shapes a model is timed at, data sets checked against the model's inputs when
the suite loads, budgets for fidelity and their presets, `task:`, and the tags that tell one
series from another (variant as converted, shape, the provider that runs). Real models, no
device: the suite, the plan, the job and the records a run would make from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typeguard
from encoder import encoder, sentences

from fleet.artifacts import Artifact
from fleet.artifacts.card import model_card
from fleet.artifacts.variant import Variant
from fleet.errors import ConfigError
from fleet.inventory import load_inventory
from fleet.job import build_job
from fleet.plan import Case, DevicePlan, make_plan
from fleet.records import DeviceContext, error_record, result_record, tags
from fleet.suite import BUDGET_PRESETS, check_budgets, load_suite
from fleet_agent import protocol

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo"


def write(folder: Path, models: str, head: str = "") -> Path:
    encoder(folder / "encoder.onnx")
    path = folder / "suite.yaml"
    path.write_text(f"name: s\n{head}models:\n{models}")
    return path


def write_zoo(folder: Path, text: str) -> Path:
    """A suite of zoo models: MLP, GPT and CALIB in `text` name the zoo's files."""
    path = folder / "suite.yaml"
    zoo = {"MLP": "digits_mlp.onnx", "GPT": "tiny_gpt.onnx", "CALIB": "digits_calib.npz"}
    for word, name in zoo.items():
        text = text.replace(word, str(ZOO / name))
    path.write_text(f"name: s\n{text}")
    return path


def cases(suite_path: Path) -> list[Case]:
    plan = make_plan(load_suite(suite_path), load_inventory(None).select(["local"]))
    return list(plan.devices[0].cases)


def artifact(case: Case) -> Artifact:
    """The case's model as if converted: the card of its FP32 source."""
    variant = case.model.series_variant(case.variant)
    return Artifact(case.model.path, "0" * 64, variant, model_card(case.model.path), "0" * 64)


def sent(case: Case) -> protocol.Case:
    """The case as a run sends it to the agent of the `local` device."""
    plan = DevicePlan(load_inventory(None).devices["local"], (case,))
    (found,) = build_job("run", plan, {case.key: artifact(case)}, {}).job["cases"]
    typeguard.check_type(found, protocol.Case)
    return found


def job_inputs(case: Case) -> list[protocol.InputSpec]:
    inputs = sent(case)["inputs"]
    assert inputs is not None
    return inputs


# --- open dimensions --------------------------------------------------------------------------


def test_an_open_dimension_without_a_value_is_refused_not_fed_as_1(tmp_path: Path) -> None:
    path = write(tmp_path, "  - {name: enc, path: encoder.onnx}\n")
    with pytest.raises(ConfigError) as error:
        load_suite(path)
    message = str(error.value)
    assert message.startswith(f"{path}:3: model 'enc': input 'input_ids' ['batch', 'sequence']")
    assert "no value for its open dimension 1 ('sequence')" in message
    assert "shapes: {input_ids: [batch, 128]}, sequence_lengths: [128], or a dataset" in message
    assert "\n" not in message


def test_shapes_per_input_reach_the_job_and_the_series(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "  - name: enc\n    path: encoder.onnx\n"
        "    shapes: {input_ids: [batch, 128], attention_mask: [1, 128]}\n",
        "measure: {batch: 1}\n",
    )
    (case,) = cases(path)
    assert case.id == "enc/onnx:fp32"
    assert job_inputs(case) == [
        {"name": "input_ids", "shape": [1, 128], "dtype": "int64"},
        {"name": "attention_mask", "shape": [1, 128], "dtype": "int64"},
    ]
    assert case.input_shapes == "input_ids=1x128,attention_mask=1x128"
    assert tags(DeviceContext("s", "r", load_inventory(None).devices["local"]), case)["shape"] == (
        "input_ids=1x128,attention_mask=1x128"
    )


def test_batch_stays_the_batch_setting(tmp_path: Path) -> None:
    models = "  - {name: enc, path: encoder.onnx, shapes: {input_ids: [batch, 64]}}\n"
    path = write(tmp_path, models, "measure: {batch: 4}\n")
    with pytest.raises(ConfigError, match=r"input 'attention_mask' .* no value"):
        load_suite(path)  # one input given, the other still open
    models = "  - {name: enc, path: encoder.onnx, sequence_lengths: [64]}\n"
    (case,) = cases(write(tmp_path, models, "measure: {batch: 4}\n"))
    assert [i["shape"] for i in job_inputs(case)] == [[4, 64], [4, 64]]
    bad = "  - {name: enc, path: encoder.onnx, shapes: {input_ids: [1, 64]}}\n"
    with pytest.raises(ConfigError, match=r"suite.yaml:4: shapes.input_ids\[0\] is the batch axis"):
        load_suite(write(tmp_path, bad, "measure: {batch: 4}\n"))


def test_a_sweep_of_lengths_is_a_case_and_a_series_each(tmp_path: Path) -> None:
    models = (
        "  - name: enc\n    path: encoder.onnx\n    sequence_lengths: [32, 128]\n"
        "    calibration: calib.npz\n    variants: [onnx:fp32, onnx:int8, onnx:int8-dynamic]\n"
    )
    sentences(tmp_path / "calib.npz")
    found = cases(write(tmp_path, models))
    assert [c.id for c in found] == [
        "enc/onnx:fp32@seq=32",
        "enc/onnx:int8@seq=32",
        "enc/onnx:int8-dynamic@seq=32",
        "enc/onnx:fp32@seq=128",
        "enc/onnx:int8@seq=128",
        "enc/onnx:int8-dynamic@seq=128",
    ]
    ctx = DeviceContext("s", "r", load_inventory(None).devices["local"])
    series = {(tags(ctx, c)["variant"], tags(ctx, c)["shape"]) for c in found}
    assert len(series) == 6  # int8 (static: calibration given) and int8-dynamic apart
    assert ("onnx:int8-static", "input_ids=1x32,attention_mask=1x32") in series
    assert [i["shape"] for i in job_inputs(found[-1])] == [[1, 128], [1, 128]]


def test_shapes_come_from_the_data_set_when_one_is_given(tmp_path: Path) -> None:
    sentences(tmp_path / "data.npz", tokens=48)
    (case,) = cases(write(tmp_path, "  - {name: enc, path: encoder.onnx, dataset: data.npz}\n"))
    assert case.input_shapes == "input_ids=1x48,attention_mask=1x48"
    assert case.shape_tag == case.input_shapes  # chosen by the data: part of the series


def test_a_model_with_fixed_shapes_keeps_its_series(tmp_path: Path) -> None:
    (case,) = cases(write_zoo(tmp_path, "models:\n  - {name: m, path: MLP}\n"))
    assert case.input_shapes == "input=1x64"  # recorded in the result's fields
    assert case.shape_tag is None  # nothing was chosen: no tag, the series is as before
    assert "shape" not in tags(DeviceContext("s", "r", load_inventory(None).devices["local"]), case)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "shapes: {input_idz: [batch, 8]}",
            r"suite.yaml:3: shapes names 'input_idz', not an input of the model; its inputs:"
            r" input_ids \['batch', 'sequence'\] int64, attention_mask",
        ),
        ("shapes: {input_ids: [batch]}", r"shapes.input_ids must be a list of 2 dimensions"),
        ("shapes: {input_ids: [batch, 0]}", r"shapes.input_ids\[1\] must be a whole number from"),
        ("shapes: [1, 2]", r"'shapes' must be a mapping of input name to shape"),
        ("sequence_lengths: [32, 32]", r"sequence_lengths must be a list of 1-64 different"),
        ("sequence_lengths: 32", r"sequence_lengths must be a list"),
        (
            "shapes: {input_ids: [batch, 8], attention_mask: [batch, 8]}, sequence_lengths: [4]",
            r"sequence_lengths sets axis 1 of inputs whose axis 1 is open, and model 'enc' has"
            r" none outside shapes",
        ),
    ],
)
def test_bad_shapes_are_refused_at_load(tmp_path: Path, entry: str, message: str) -> None:
    path = write(tmp_path, f"  - {{name: enc, path: encoder.onnx, {entry}}}\n")
    with pytest.raises(ConfigError, match=message) as error:
        load_suite(path)
    assert "\n" not in str(error.value)


def test_a_fixed_dimension_cannot_be_changed(tmp_path: Path) -> None:
    path = write_zoo(tmp_path, "models:\n  - {name: m, path: MLP, shapes: {input: [1, 32]}}\n")
    with pytest.raises(ConfigError, match=r"shapes.input\[1\] must be 64, as the model fixes it"):
        load_suite(path)


# --- data sets checked when the suite loads ---------------------------------------------------


def test_a_data_set_keyed_by_input_name_is_accepted(tmp_path: Path) -> None:
    sentences(tmp_path / "data.npz", labels=np.zeros(24, np.int64))
    models = "  - {name: enc, path: encoder.onnx, dataset: data.npz, calibration: data.npz}\n"
    (model,) = load_suite(write(tmp_path, models)).models
    assert model.dataset == tmp_path / "data.npz"


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"input_ids": np.zeros((4, 40), np.int64)},
            r"needs arrays named after the model's inputs \['input_ids', 'attention_mask'\]"
            r" \(missing \['attention_mask'\]\); it has \['input_ids'\]",
        ),
        (
            {"input_ids": np.zeros((4, 40), np.float32), "attention_mask": np.ones((4, 40))},
            r"array 'input_ids' cannot feed input 'input_ids': it holds float32 values, the"
            r" input takes int64",
        ),
        (
            {"input_ids": np.zeros((4, 40, 2), np.int64), "attention_mask": np.ones((4, 40))},
            r"array 'input_ids' cannot feed input 'input_ids': it is 3-D \[4, 40, 2\], the input"
            r" 2-D",
        ),
        (
            {
                "input_ids": np.zeros((4, 40), np.int64),
                "attention_mask": np.ones((4, 40), np.int64),
                "labels": np.zeros(3, np.int64),
            },
            r"'labels' must be whole numbers, one per sample \(\[4\]\)",
        ),
    ],
)
def test_a_data_set_that_does_not_fit_names_the_users_file(
    tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    np.savez(tmp_path / "mine.npz", **arrays)
    path = write(tmp_path, "  - {name: enc, path: encoder.onnx, dataset: mine.npz}\n")
    with pytest.raises(ConfigError, match=message) as error:
        load_suite(path)
    text = str(error.value)
    assert text.startswith(
        f"{path}:3: dataset {tmp_path / 'mine.npz'} does not fit model 'enc' (checked against"
        " its inputs input_ids ['batch', 'sequence'] int64, attention_mask"
    )
    assert "\n" not in text


def test_a_calibration_set_is_checked_too(tmp_path: Path) -> None:
    np.savez(tmp_path / "calib.npz", inputs=np.zeros((4, 40), np.int64))
    models = "  - {name: enc, path: encoder.onnx, sequence_lengths: [32], calibration: calib.npz}\n"
    with pytest.raises(ConfigError, match=r"suite.yaml:3: calibration .*calib.npz does not fit"):
        load_suite(write(tmp_path, models))


# --- the result names the user's file, keeps its latency, and its provider --------------------


def result_event(case: Case, **fields: object) -> protocol.Result:
    return {
        "event": "result",
        "case": case.id,
        "tags": {"runtime": case.runtime, "provider": "xnnpack"},
        "fields": {"latency_ms_p50": 1.0, **fields},  # type: ignore[typeddict-item]
        "generation": [],
    }


def test_scoring_that_failed_keeps_the_latency_and_names_the_users_file(tmp_path: Path) -> None:
    sentences(tmp_path / "data.npz")
    models = "  - {name: enc, path: encoder.onnx, dataset: data.npz}\n"
    (case,) = cases(write(tmp_path, models))
    local = load_inventory(None).devices["local"]
    on_device = sent(case)["dataset"]
    assert on_device is not None and on_device != str(tmp_path / "data.npz")
    problem = f"accuracy step failed on data set {on_device}: ValueError: no"
    event = result_event(case, accuracy_error=problem)
    record = result_record(DeviceContext("s", "r", local), case, artifact(case), event)
    assert record.status == "ok" and record.number("latency_ms_p50") == 1.0
    assert record.fields["accuracy_error"] == (
        f"accuracy step failed on data set {tmp_path / 'data.npz'}: ValueError: no"
    )
    assert record.fields["passed"] is False
    assert "accuracy: not scored (accuracy step failed on data set" in str(
        record.fields["budget_failures"]
    )


def test_an_error_is_shown_under_the_provider_that_runs(tmp_path: Path) -> None:
    models = "  - {name: m, path: MLP, variants: [onnx:fp32, tflite:fp32]}\n"
    onnx_case, tflite_case = cases(write_zoo(tmp_path, f"models:\n{models}"))
    ctx = DeviceContext("s", "r", load_inventory(None).devices["local"])
    event: protocol.CaseError = {
        "event": "case_error", "case": tflite_case.id, "kind": "timeout", "message": "over 1 s",
    }  # fmt: skip
    record = error_record(ctx, tflite_case, artifact(tflite_case), event)
    assert record.tags["provider"] == "xnnpack"  # LiteRT's CPU path; the suite says cpu
    # ONNX Runtime's provider is known once a result of this device says what ran.
    result_record(ctx, onnx_case, artifact(onnx_case), result_event(onnx_case))
    assert tags(ctx, onnx_case)["provider"] == "xnnpack"  # as that (made-up) result said


# --- budgets, presets, task -------------------------------------------------------------------


def test_fidelity_budgets_and_the_embedded_preset(tmp_path: Path) -> None:
    sentences(tmp_path / "data.npz")
    models = (
        "  - name: enc\n    path: encoder.onnx\n    dataset: data.npz\n    task: embedding\n"
        "    budgets: {preset: embedded, min_cosine: 0.98, max_abs_error: 0.1}\n"
    )
    suite = load_suite(write(tmp_path, models, "budgets: embedded\n"))
    (model,) = suite.models
    assert model.task == "embedding"
    assert (
        suite.budgets
        == BUDGET_PRESETS["embedded"]
        == {
            "model_size_mb": 100.0,
            "peak_ram_mb": 1024.0,
        }
    )
    budgets = suite.budgets_for(model, "lab")
    assert budgets == {
        "model_size_mb": 100.0,
        "peak_ram_mb": 1024.0,
        "min_cosine": 0.98,
        "max_abs_error": 0.1,
    }
    fields = {"cosine_mean": 0.97, "max_abs_error": 0.05, "model_size_mb": 120.0}
    assert check_budgets(fields, budgets) == [
        "min_cosine: 0.97 < 0.98",
        "model_size_mb: 120 > 100",
    ]
    assert check_budgets({"snr_db": 20.0}, {"min_snr_db": 25}) == ["min_snr_db: 20 < 25"]


@pytest.mark.parametrize(
    ("budgets", "message"),
    [
        ("embeded", r"suite.yaml:2: unknown budget preset 'embeded'; presets: embedded"),
        ("{preset: tiny}", r"suite.yaml:2: unknown budget preset 'tiny'"),
        ("{min_cosine: 1.5}", r"budget min_cosine must be a number from -1 to 1, not 1.5"),
        ("{min_snr_db: -3}", r"budget min_snr_db must be a number from 0 to 1000"),
        ("{max_abs_error: -1}", r"budget max_abs_error must be a number of at least 0"),
    ],
)
def test_bad_budgets_are_refused(tmp_path: Path, budgets: str, message: str) -> None:
    path = write_zoo(tmp_path, f"budgets: {budgets}\nmodels:\n  - {{name: m, path: MLP}}\n")
    with pytest.raises(ConfigError, match=message):
        load_suite(path)


def test_task_defaults_to_what_fleet_measured_before(tmp_path: Path) -> None:
    models = (
        "  - {name: m, path: MLP}\n  - {name: g, path: GPT, architecture: decoder}\n"
        "  - {name: t, path: MLP, task: tensor}\n"
    )
    suite = load_suite(write_zoo(tmp_path, f"models:\n{models}"))
    # Undeclared: as before tasks (a decoder generates; fidelity infers the others' task).
    assert [m.task for m in suite.models] == [None, None, "tensor"]
    assert [m.generates for m in suite.models] == [False, True, False]
    plan = make_plan(suite, load_inventory(None).select(["local"]))
    assert [c.task for c in plan.devices[0].cases] == [None, "generate", None]
    path = write_zoo(tmp_path, "models:\n  - {name: m, path: MLP, task: ranking}\n")
    with pytest.raises(ConfigError, match=r"suite.yaml:3: task must be one of classification,"):
        load_suite(path)


def test_one_conversion_written_twice_is_refused(tmp_path: Path) -> None:
    models = "  - {name: m, path: MLP, calibration: CALIB, variants: [onnx:int8, onnx:int8-static]}"
    path = write_zoo(tmp_path, f"models:\n{models}\n")
    with pytest.raises(ConfigError, match=r"variant onnx:int8 is converted as onnx:int8-static"):
        load_suite(path)
    assert Variant.parse("onnx:int8-static").spec() == "onnx:int8-static"


def test_a_model_file_that_does_not_load_is_named_with_the_suites_line(tmp_path: Path) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07 not a model")
    path = write_zoo(tmp_path, "models:\n  - {name: m, path: broken.onnx}\n")
    with pytest.raises(ConfigError) as error:
        load_suite(path)
    assert str(error.value).startswith(f"{path}:3: {tmp_path / 'broken.onnx'}: not a readable ONNX")


def test_tflite_variants_are_timed_only_at_the_shapes_they_are_converted_at(
    tmp_path: Path,
) -> None:
    """A TFLite file of a model with open dimensions has them fixed at its data's (the
    converter's rule): timing it at another length would time the converted one, silently."""
    sentences(tmp_path / "data.npz", tokens=40)
    swept = (
        "  - {name: enc, path: encoder.onnx, dataset: data.npz, sequence_lengths: [32],"
        " variants: [onnx:fp32, tflite:fp32]}\n"
    )
    with pytest.raises(ConfigError) as error:
        load_suite(write(tmp_path, swept))
    assert str(error.value).startswith(
        f"{tmp_path / 'suite.yaml'}:3: model 'enc': its tflite variants are converted with input"
        " 'input_ids' fixed at its data's [1, 40], so they cannot be timed at"
        " input_ids=1x32,attention_mask=1x32; list them under a model entry of their own"
    )
    bare = "  - {name: enc, path: encoder.onnx, sequence_lengths: [32], variants: [tflite:fp32]}\n"
    with pytest.raises(ConfigError, match=r"give it a dataset or calibration set"):
        load_suite(write(tmp_path, bare))
    at_its_data = (
        "  - {name: enc, path: encoder.onnx, dataset: data.npz, variants: [tflite:fp32]}\n"
    )
    (case,) = cases(write(tmp_path, at_its_data))
    assert case.shape_tag == "input_ids=1x40,attention_mask=1x40"
