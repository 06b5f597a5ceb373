"""Fidelity by task, budgets on it, layouts and failures per variant (issue 13: 3, 4, 6).

On the zoo's real models and their real conversions; the broken variants are the zoo's
own models with a layer zeroed or cut, so their files load and run like any other.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from fleet.artifacts import (
    Artifact,
    ArtifactCache,
    Failed,
    FidelityBudgetError,
    Variant,
    check_fidelity_budgets,
    convert,
    convert_all,
    fidelity,
    model_card,
)
from fleet.artifacts.cache import sha256_file
from fleet.cli.convert import convert as convert_command
from fleet.errors import ConfigError

ZOO = Path(__file__).resolve().parents[1] / "zoo"
MLP, TEST, CALIB = ZOO / "digits_mlp.onnx", ZOO / "digits_test.npz", ZOO / "digits_calib.npz"


def as_artifact(path: Path, spec: str = "onnx:fp32") -> Artifact:
    card = replace(model_card(path), variant=spec)
    return Artifact(path, sha256_file(path), Variant.parse(spec), card, sha256_file(path))


def zeroed_mlp(path: Path) -> Path:
    """The zoo MLP with its last layer zeroed: it loads and runs, and says 0 for everything
    (what a broken INT8 conversion did to an encoder in issue 13)."""
    model = onnx.load(MLP)
    for tensor in model.graph.initializer:
        if tensor.name.startswith("2."):
            zero = np.zeros_like(numpy_helper.to_array(tensor))
            tensor.CopyFrom(numpy_helper.from_array(zero, tensor.name))
    onnx.save(model, path)
    return path


def test_all_zero_outputs_never_agree_and_never_pass(tmp_path: Path) -> None:
    reference = as_artifact(MLP)
    broken = as_artifact(zeroed_mlp(tmp_path / "zeros.onnx"), "onnx:int8-static")
    with np.load(TEST) as data:  # unlabeled: agreement is all there is to judge
        np.savez(tmp_path / "unlabeled.npz", inputs=data["inputs"])
    for dataset in (TEST, tmp_path / "unlabeled.npz"):
        measured = fidelity(reference, broken, dataset)
        assert measured["agreement_top1"] == 0.0  # argmax of zeros was class 0: ~10% before
        assert measured["agreement_top5"] == 0.0
        assert measured["cosine_min"] == 0.0
        assert measured["constant_output"] is True
        card = replace(broken.card, fidelity=measured)
        # Refused whatever the budgets, even generous or none at all.
        for budgets in ({}, {"accuracy_drop_pp": 100.0}, {"min_cosine": -1.0}):
            with pytest.raises(FidelityBudgetError, match="same for every sample"):
                check_fidelity_budgets(card, budgets)
    if "accuracy_top1" in measured:
        assert measured["accuracy_top1"] == 0.0


def test_task_chooses_the_measures(tmp_path: Path) -> None:
    reference = as_artifact(MLP)
    classified = fidelity(reference, reference, TEST)
    assert classified["task"] == "classification"  # inferred: labels, [batch, classes]
    assert classified["agreement_top1"] == classified["agreement_top5"] == 1.0
    assert classified["accuracy_drop_pp"] == 0.0
    assert classified["snr_db"] == classified["psnr_db"] == 200.0  # identical
    embedded = fidelity(reference, reference, TEST, task="embedding")
    assert embedded["neighbour_agreement"] == 1.0
    assert "agreement_top1" not in embedded and "accuracy_drop_pp" not in embedded
    tensor = fidelity(reference, reference, TEST, task="tensor")
    assert {"snr_db", "psnr_db", "max_abs_error"} <= tensor.keys()
    assert not {"agreement_top1", "neighbour_agreement", "cosine_min"} & tensor.keys()
    with pytest.raises(ConfigError, match="unknown task 'regression'"):
        fidelity(reference, reference, TEST, task="regression")


@pytest.fixture(scope="module")
def mlp_int8(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    cache = ArtifactCache(tmp_path_factory.mktemp("artifacts"))
    return convert(MLP, Variant.parse("onnx:int8-dynamic"), cache=cache, dataset=TEST)


def test_cosine_snr_and_error_budgets_refuse_below_and_keep_above(mlp_int8: Artifact) -> None:
    measured = mlp_int8.card.fidelity
    assert measured is not None
    cosine, snr, error = measured["cosine_mean"], measured["snr_db"], measured["max_abs_error"]
    assert 0.99 < cosine < 1.0
    assert 20 < snr < 200
    assert 0 < error < 1
    check_fidelity_budgets(
        mlp_int8.card,
        {"min_cosine": cosine - 1e-4, "min_snr_db": snr - 1, "max_abs_error": error * 1.1},
    )
    with pytest.raises(FidelityBudgetError, match=r"cosine_mean 0\.9\d+ is below the budget"):
        check_fidelity_budgets(mlp_int8.card, {"min_cosine": 0.99999})
    with pytest.raises(FidelityBudgetError, match=r"snr_db .* dB is below the budget min_snr_db"):
        check_fidelity_budgets(mlp_int8.card, {"min_snr_db": snr + 1})
    with pytest.raises(FidelityBudgetError, match=r"max_abs_error .* above the budget") as info:
        check_fidelity_budgets(mlp_int8.card, {"max_abs_error": error / 2, "p50_ms": 1.0})
    assert info.value.variant == "onnx:int8-dynamic"
    assert "digits_mlp.onnx on digits_test.npz" in str(info.value)


def test_accuracy_drop_is_not_judged_by_argmax_for_embeddings(mlp_int8: Artifact) -> None:
    """Issue 13: a 384-d embedding's argmax 'disagreement' refused a variant of cosine 0.997."""
    measured = mlp_int8.card.fidelity
    assert measured is not None
    as_embedding = replace(
        mlp_int8.card,
        fidelity={k: v for k, v in measured.items() if "agreement" not in k and "accuracy" not in k}
        | {"task": "embedding"},  # type: ignore[typeddict-item]
    )
    check_fidelity_budgets(as_embedding, {"accuracy_drop_pp": 0.0})
    with pytest.raises(FidelityBudgetError, match="accuracy drop"):
        check_fidelity_budgets(mlp_int8.card, {"accuracy_drop_pp": -1.0})


def five_outputs(path: Path) -> Path:
    """The zoo MLP cut to its first 5 logits: an output that no layout can align."""
    model = onnx.load(MLP)
    model.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "s0"))
    model.graph.initializer.append(numpy_helper.from_array(np.array([5], np.int64), "s5"))
    model.graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "ax"))
    old = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{o}_full" if o == old else o for o in node.output]
    model.graph.node.append(helper.make_node("Slice", [f"{old}_full", "s0", "s5", "ax"], [old]))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info(old, TensorProto.FLOAT, ["batch", 5]))
    onnx.save(model, path)
    return path


def test_an_output_that_cannot_be_aligned_is_that_variants_error(tmp_path: Path) -> None:
    reference = as_artifact(MLP)
    cut = as_artifact(five_outputs(tmp_path / "cut.onnx"), "onnx:fp16")
    measured = fidelity(reference, cut, TEST)  # no exception: the run goes on
    assert "cosine_min" not in measured
    assert "output 'logits' is [5] per sample where FP32's is [10]" in measured["error"]
    with pytest.raises(FidelityBudgetError, match=r"onnx:fp16 of .*cannot be compared"):
        check_fidelity_budgets(replace(cut.card, fidelity=measured), {})
    # A variant its runtime cannot load is that variant's error too.
    unloadable = replace(cut, variant=Variant.parse("tflite:fp32"))
    assert "does not load in its runtime" in fidelity(reference, unloadable, TEST)["error"]


def test_convert_all_converts_every_variant_it_can(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "artifacts")
    wanted = [Variant.parse(s) for s in ("onnx:fp16", "onnx:int8-static", "onnx:int8-dynamic")]
    done = convert_all(MLP, wanted, cache=cache, dataset=TEST)  # no calibration: static fails
    assert [str(d.variant) for d in done] == ["onnx:fp16", "onnx:int8-static", "onnx:int8-dynamic"]
    failed = done[1]
    assert isinstance(failed, Failed)
    assert "calibrates on data" in failed.reason
    assert all(isinstance(d, Artifact) and d.path.is_file() for d in (done[0], done[2]))
    # A broken source is everyone's failure: it raises before converting anything.
    with pytest.raises(ConfigError, match="model file not found"):
        convert_all(tmp_path / "missing.onnx", wanted, cache=cache)


def test_convert_command_lists_what_it_made_and_exits_1_on_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_CACHE", str(tmp_path / "cache"))
    args = [str(MLP), "--to", "onnx:fp16,onnx:int8-static,onnx:int4", "--dataset", str(TEST)]
    result = CliRunner().invoke(convert_command, args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:] if not line.startswith("FAILED")}
    assert set(rows) == {"onnx:fp16", "onnx:int8-static", "onnx:int4"}
    assert Path(rows["onnx:fp16"][-1]).is_file()
    assert rows["onnx:fp16"][1] == "fp16"
    assert rows["onnx:int8-static"][5] == rows["onnx:int4"][5] == "FAILED"
    reasons = {line.split()[1]: line for line in lines if line.startswith("FAILED ")}
    assert "calibrates on data" in reasons["onnx:int8-static:"]
    assert "no MatMul with a constant 2-D weight" in reasons["onnx:int4:"]  # a Gemm-only MLP


def feature_net(path: Path, channel_last: bool) -> Path:
    """x [N,1,8,8] -> features [N,4,8,8] (a convolution) and map [N,1,8,8] (its sigmoid
    head); `channel_last` makes them what onnx2tf writes: NHWC, named Identity and
    Identity_1, in the other order."""
    rng = np.random.default_rng(4)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=(1, 4, 1, 1)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["f"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["f", "w2"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["m"]),
    ]
    named = {"features": ("f", 4), "map": ("m", 1)}
    outputs = []
    for name, (tensor, channels) in named.items():
        if channel_last:
            name = "Identity" if name == "map" else "Identity_1"
            nodes.append(helper.make_node("Transpose", [tensor], [name], perm=[0, 2, 3, 1]))
            shape = ["batch", 8, 8, channels]
        else:
            nodes.append(helper.make_node("Identity", [tensor], [name]))
            shape = ["batch", channels, 8, 8]
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])
    graph = helper.make_graph(nodes, "features", [x], sorted(outputs, key=lambda o: o.name), inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_channel_last_outputs_are_compared_in_the_reference_layout(tmp_path: Path) -> None:
    """Issue 13 (3): onnx2tf's NHWC outputs against FP32's NCHW ones failed the whole suite."""
    reference = as_artifact(feature_net(tmp_path / "nchw.onnx", channel_last=False))
    # As onnx2tf writes it, in a file onnxruntime runs here (the layout is what is tested).
    nhwc = as_artifact(feature_net(tmp_path / "nhwc.onnx", channel_last=True), "onnx:fp16")
    assert [o["shape"] for o in nhwc.card.outputs] == [["batch", 8, 8, 1], ["batch", 8, 8, 4]]
    dataset = ZOO / "digits_cnn_test.npz"
    measured = fidelity(reference, nhwc, dataset, task="tensor")
    assert "error" not in measured
    assert measured["snr_db"] == 200.0 and measured["max_abs_error"] == 0.0  # the same values
    assert set(measured["outputs"]) == {"features", "map"}  # each output on its own
    check_fidelity_budgets(replace(nhwc.card, fidelity=measured), {"min_snr_db": 60})
