"""Model cards: read from real .onnx and .tflite files, and printed by `fleet model card`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from fleet.artifacts import ArtifactCache, ModelCard, Variant, convert, model_card, read_card
from fleet.cli.convert import model
from fleet.errors import ConfigError

ZOO = Path(__file__).resolve().parents[1] / "zoo"


def small_cnn(path: Path) -> Path:
    """Conv(4x1x3x3 + bias) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(4x10 + bias)."""
    rng = np.random.default_rng(1)
    weights = {
        "conv_w": rng.normal(size=(4, 1, 3, 3)),
        "conv_b": rng.normal(size=4),
        "fc_w": rng.normal(size=(4, 10)),
        "fc_b": rng.normal(size=10),
        "shape": np.array([-1, 4]),  # int64 shape constant: not a weight
    }
    inits = [
        numpy_helper.from_array(v.astype(np.int64 if k == "shape" else np.float32), k)
        for k, v in weights.items()
    ]
    nodes = [
        helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Reshape", ["g", "shape"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["scores"]),
    ]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 10])
    return save_graph(path, helper.make_graph(nodes, "small_cnn", [image], [scores], inits))


def save_graph(path: Path, graph: onnx.GraphProto) -> Path:
    """The graph as an opset 13, IR 8 model file."""
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx_model.ir_version = 8
    onnx.save(onnx_model, path)
    return path


def test_onnx_card_counts_weights_ops_and_io(tmp_path: Path) -> None:
    path = small_cnn(tmp_path / "cnn.onnx")
    card = model_card(path, {"family": "compact", "architecture": "cnn", "base_model": "none"})
    assert card.format == "onnx"
    assert card.opset == 13
    assert card.params == 4 * 9 + 4 + 4 * 10 + 10  # the int64 shape is not a weight
    assert card.weight_types == {"float32": 90}
    assert card.precision == "fp32"
    assert card.ops == {"Conv": 1, "Gemm": 1, "GlobalAveragePool": 1, "Relu": 1, "Reshape": 1}
    assert card.inputs == [{"name": "image", "shape": ["batch", 1, 8, 8], "dtype": "float32"}]
    assert card.outputs == [{"name": "scores", "shape": ["batch", 10], "dtype": "float32"}]
    assert card.file_size_bytes == path.stat().st_size
    assert card.model_size_mb == pytest.approx(path.stat().st_size / 1e6)
    assert card.declared == {"family": "compact", "architecture": "cnn", "base_model": "none"}
    # Stored as a sidecar and printed by `fleet model card --json`: plain JSON, the declared
    # fields beside the measured ones, and the same card when read back.
    as_json = json.loads(json.dumps(card.to_dict()))
    assert (as_json["family"], as_json["params"], as_json["opset"]) == ("compact", 90, 13)
    assert "fidelity" not in as_json
    assert ModelCard.from_dict(as_json) == card


def test_a_damaged_or_stale_card_is_refused_by_name(tmp_path: Path) -> None:
    stored = model_card(small_cnn(tmp_path / "cnn.onnx")).to_dict()
    with pytest.raises(ValueError, match="params"):
        ModelCard.from_dict({**stored, "params": "90"})
    with pytest.raises(ValueError, match="inputs"):
        ModelCard.from_dict({**stored, "inputs": [{"name": "image", "shape": [1]}]})
    with pytest.raises(ValueError, match="fidelity"):
        ModelCard.from_dict({**stored, "fidelity": {"agreement_top1": 1.0}})
    with pytest.raises(ValueError, match="precision"):
        ModelCard.from_dict({k: v for k, v in stored.items() if k != "precision"})
    with pytest.raises(ValueError, match="JSON object"):
        ModelCard.from_dict([stored])


def test_card_of_the_zoo_cnn_matches_its_declared_size() -> None:
    card = model_card(ZOO / "digits_cnn.onnx")
    assert card.inputs[0]["shape"][1:] == [1, 8, 8]
    assert card.ops["Conv"] >= 2
    assert 1_000 < card.params < 100_000
    assert card.model_size_mb < 100  # the embedded budget


def test_quantized_onnx_card_names_int8(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "artifacts")
    artifact = convert(small_cnn(tmp_path / "cnn.onnx"), Variant("onnx", "int8"), cache=cache)
    card = artifact.card
    assert card.precision == "int8"
    assert card.weight_types["int8"] == 4 * 9 + 4 * 10  # biases and small tensors stay float
    assert card.params == 90
    assert card.variant == "onnx:int8-dynamic"
    assert card.source == "cnn.onnx"


def test_declared_field_cannot_replace_a_measured_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="would replace measured"):
        model_card(small_cnn(tmp_path / "cnn.onnx"), {"params": "7B"})


def test_unreadable_or_unknown_files_are_config_errors(tmp_path: Path) -> None:
    corrupt = tmp_path / "broken.onnx"
    corrupt.write_bytes(b"\x08\x07not a protobuf at all" * 10)
    with pytest.raises(ConfigError, match=r"broken\.onnx: not a readable ONNX model"):
        model_card(corrupt)
    bad_tflite = tmp_path / "broken.tflite"
    bad_tflite.write_bytes(b"\x00" * 64)
    with pytest.raises(ConfigError, match=r"broken\.tflite: not a readable TFLite model"):
        model_card(bad_tflite)
    other = tmp_path / "model.pt"
    other.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"model\.pt: unknown model format"):
        model_card(other)
    with pytest.raises(ConfigError, match="not found"):
        model_card(tmp_path / "missing.onnx")


@pytest.mark.slow
def test_tflite_cards_from_real_conversions(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "artifacts")
    source = small_cnn(tmp_path / "cnn.onnx")
    calibration = tmp_path / "calib.npz"
    np.savez(calibration, inputs=np.random.default_rng(0).random((20, 1, 8, 8), np.float32))
    fp32 = convert(source, Variant("tflite", "fp32"), cache=cache).card
    assert fp32.format == "tflite"
    assert fp32.precision == "fp32"
    assert fp32.params == 90
    assert fp32.ops["CONV_2D"] == 1
    assert fp32.ops["FULLY_CONNECTED"] == 1
    # Inputs keep ONNX's name and NCHW layout; the batch is dynamic.
    assert fp32.inputs == [{"name": "image", "shape": ["?", 1, 8, 8], "dtype": "float32"}]
    assert fp32.opset is None
    assert "opset" not in fp32.to_dict()
    fp16 = convert(source, Variant("tflite", "fp16"), cache=cache).card
    assert fp16.precision == "fp16"
    assert fp16.weight_types == {"float16": 90}
    int8 = convert(source, Variant("tflite", "int8"), calibration=calibration, cache=cache).card
    assert int8.precision == "int8"
    assert int8.weight_types["int8"] == 4 * 9 + 4 * 10
    assert int8.weight_types["int32"] == 4 + 10  # quantized biases
    assert int8.ops["QUANTIZE"] == 1  # float IO: quantized at the edges


def test_model_card_cli_prints_table_and_json(tmp_path: Path) -> None:
    path = small_cnn(tmp_path / "cnn.onnx")
    result = CliRunner().invoke(model, ["card", str(path)])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert lines["params"].split()[1] == "90"
    assert "image float32 ['batch', 1, 8, 8]" in lines["inputs"]
    assert "Conv 1" in lines["ops"]
    as_json = CliRunner().invoke(model, ["card", str(path), "--json"])
    assert as_json.exit_code == 0
    assert json.loads(as_json.output) == model_card(path).to_dict()


def test_a_stored_card_from_the_previous_fleet_or_damaged_never_breaks_a_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = ArtifactCache(tmp_path / "artifacts")
    source = small_cnn(tmp_path / "cnn.onnx")
    first = convert(source, Variant("onnx", "fp16"), cache=cache, declared={"family": "compact"})
    sidecar_path = first.path.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())
    # The previous fleet wrote the same card JSON, and listed the declared fields apart.
    sidecar_path.write_text(json.dumps({**sidecar, "declared": {"family": "compact"}}))
    assert read_card(first.path) == first.card
    again = convert(source, Variant("onnx", "fp16"), cache=cache, declared={"family": "dense"})
    assert again.card == replace(first.card, declared={"family": "dense"})
    rewritten = json.loads(sidecar_path.read_text())
    assert (rewritten["card"]["family"], "declared" in rewritten) == ("dense", False)
    # A damaged card is described from the file again, without converting it again.
    sidecar_path.write_text(json.dumps({**sidecar, "card": {**sidecar["card"], "params": "90"}}))
    assert read_card(first.path) == model_card(first.path)
    healed = convert(source, Variant("onnx", "fp16"), cache=cache)
    assert "stored model card unusable" in caplog.text
    assert healed.card == replace(first.card, declared={})
    assert json.loads(sidecar_path.read_text())["card"] == healed.card.to_dict()
    assert cache.stats.conversions == 1


def test_card_of_a_cached_artifact_is_its_stored_card(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "artifacts")
    dataset = tmp_path / "test.npz"
    rng = np.random.default_rng(2)
    np.savez(dataset, inputs=rng.random((30, 1, 8, 8), np.float32), labels=rng.integers(0, 10, 30))
    source = small_cnn(tmp_path / "cnn.onnx")
    artifact = convert(source, Variant("onnx", "fp16"), cache=cache, dataset=dataset)
    stored = read_card(artifact.path)
    assert stored == artifact.card
    assert stored.fidelity is not None
    assert stored.fidelity["agreement_top1"] > 0.9
    shown = CliRunner().invoke(model, ["card", str(artifact.path)])
    assert "fidelity" in shown.output
    assert "agreement_top1" in shown.output


# --- issue 13 (7): computed weights, quantized precision, tensor types, stale fidelity --------


def computed_weights_cnn(path: Path) -> Path:
    """small_cnn with no initializer: the conv weight a Constant node, its bias a Constant's
    value_floats, the dense weight made at load by ConstantOfShape, its bias by Expand."""
    rng = np.random.default_rng(1)
    conv_w = numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "t")
    fc_value = helper.make_tensor("v", TensorProto.FLOAT, [1], [0.01])
    nodes = [
        helper.make_node("Constant", [], ["conv_w"], value=conv_w),
        helper.make_node("Constant", [], ["conv_b"], value_floats=[0.1, 0.2, 0.3, 0.4]),
        helper.make_node("Constant", [], ["fc_shape"], value_ints=[4, 10]),
        helper.make_node("ConstantOfShape", ["fc_shape"], ["fc_w"], value=fc_value),
        helper.make_node("Constant", [], ["one"], value_floats=[0.5]),
        helper.make_node("Constant", [], ["ten"], value_ints=[10]),
        helper.make_node("Expand", ["one", "ten"], ["fc_b"]),
        helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["scores"]),
    ]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 10])
    return save_graph(path, helper.make_graph(nodes, "computed", [image], [scores]))


def test_params_and_size_count_weights_computed_at_load(tmp_path: Path) -> None:
    path = computed_weights_cnn(tmp_path / "computed.onnx")
    card = model_card(path)
    assert card.params == 4 * 9 + 4 + 4 * 10 + 10  # as small_cnn: 40 were missed before
    assert card.weight_types == {"float32": 90}
    assert card.weight_bytes == {"float32": 360}
    assert card.computed_weight_bytes == (4 * 10 + 10) * 4
    assert card.model_size_mb == pytest.approx((path.stat().st_size + 200) / 1e6)
    assert model_card(small_cnn(tmp_path / "cnn.onnx")).computed_weight_bytes is None


def tiny_encoder(path: Path) -> Path:
    """An encoder's shape of weights: an embedding table (Gather) and four 64x64 MatMuls."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(1000, 64)).astype(np.float32), "table")]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["h0"])]
    for i in range(4):
        weight = (rng.normal(size=(64, 64)) / 8).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"h{i + 1}"]))
    nodes.append(helper.make_node("ReduceMean", ["h4"], ["embedding"], axes=[1], keepdims=0))
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "sequence"])
    embedding = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 64])
    return save_graph(path, helper.make_graph(nodes, "encoder", [ids], [embedding], inits))


def test_a_quantized_encoder_is_int8_whatever_stays_float(tmp_path: Path) -> None:
    """The embedding table stays float32 under static int8 (it was 'fp32' before) and becomes
    uint8 under dynamic int8 (it was 'uint8' before); both are int8 models."""
    source = tiny_encoder(tmp_path / "encoder.onnx")
    calibration = tmp_path / "calib.npz"
    np.savez(calibration, ids=np.random.default_rng(1).integers(0, 1000, (16, 12)))
    cache = ArtifactCache(tmp_path / "artifacts")
    static = convert(
        source, Variant.parse("onnx:int8-static"), calibration=calibration, cache=cache
    )
    assert static.card.weight_types == {"float32": 64_000, "int8": 16_384}
    assert static.card.weight_bytes == {"float32": 256_000, "int8": 16_384}
    assert static.card.precision == "int8"
    dynamic = convert(source, Variant.parse("onnx:int8-dynamic"), cache=cache)
    assert dynamic.card.weight_types == {"int8": 16_384, "uint8": 64_000}
    assert dynamic.card.precision == "int8"
    int4 = convert(source, Variant.parse("onnx:int4"), cache=cache)
    assert str(int4.variant) == "onnx:int4-block32"
    assert int4.card.weight_types == {"float32": 64_000, "int4": 16_384}
    assert int4.card.weight_bytes == {"float32": 256_000, "int4": 8_192}  # two weights a byte
    assert int4.card.precision == "int4"
    assert int4.card.ops["MatMulNBits"] == 4
    shown = CliRunner().invoke(model, ["card", str(int4.path)])
    assert "int4 8192" in shown.output  # the bytes per tensor type


def test_a_card_without_a_data_set_has_no_fidelity_from_an_earlier_one(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "artifacts")
    source = ZOO / "digits_mlp.onnx"
    measured = convert(
        source, Variant("onnx", "fp16"), cache=cache, dataset=ZOO / "digits_test.npz"
    )
    assert measured.card.fidelity is not None
    again = convert(source, Variant("onnx", "fp16"), cache=cache)
    assert again.card.fidelity is None
    assert again.path == measured.path and cache.stats.conversions == 1
    # The stored card keeps it, for the next request with the same data set.
    assert read_card(again.path).fidelity == measured.card.fidelity
