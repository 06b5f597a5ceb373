"""Conversion with real converters and runtimes: the zoo's variant matrix, the artifact cache,
fidelity budgets and the errors a user sees."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from ai_edge_litert.interpreter import Interpreter
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from fleet.artifacts import (
    Artifact,
    ArtifactCache,
    FidelityBudgetError,
    Variant,
    check_fidelity_budgets,
    convert,
    fidelity,
    model_card,
)
from fleet.artifacts.cache import sha256_file
from fleet.cli.convert import convert as convert_command
from fleet.errors import ConfigError, ConversionError

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo"
# model -> (source, calibration set, test set); the zoo's own held-out split.
DIGITS = {
    "digits_mlp": ("digits_mlp.onnx", "digits_calib.npz", "digits_test.npz"),
    "digits_cnn": ("digits_cnn.onnx", "digits_cnn_calib.npz", "digits_cnn_test.npz"),
}
# Accuracy budget per precision, in percentage points against FP32 on the test set.
MAX_DROP_PP = {"fp32": 0.0, "fp16": 0.5, "int8": 2.0}
ONNX_VARIANTS = ["onnx:fp32", "onnx:fp16", "onnx:int8-static", "onnx:int8-dynamic"]
TFLITE_VARIANTS = ["tflite:fp32", "tflite:fp16", "tflite:int8-static", "tflite:int8-dynamic"]


@pytest.fixture(scope="module")
def zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> ArtifactCache:
    """One cache for the zoo tests: a TFLite run converts once and serves its siblings."""
    return ArtifactCache(tmp_path_factory.mktemp("zoo-artifacts"))


def run_in_runtime(artifact: Artifact, inputs: np.ndarray) -> np.ndarray:
    """Load the file in the runtime a device would use and run a few samples through it."""
    if artifact.variant.format == "onnx":
        session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return np.asarray(session.run(None, {name: inputs})[0])
    interpreter = Interpreter(model_path=str(artifact.path))
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], list(inputs.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], inputs.astype(detail["dtype"]))
    interpreter.invoke()
    return np.asarray(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))


def check_variant(
    name: str, spec: str, cache: ArtifactCache, declared: dict[str, str] | None = None
) -> Artifact:
    source, calibration, test = DIGITS[name]
    artifact = convert(
        ZOO / source,
        Variant.parse(spec),
        calibration=ZOO / calibration,
        dataset=ZOO / test,
        cache=cache,
        declared=declared,
    )
    assert str(artifact.variant) == spec
    assert artifact.path.name == f"{artifact.sha256}.{artifact.variant.format}"
    assert sha256_file(artifact.path) == artifact.sha256
    with np.load(ZOO / test) as data:
        outputs = run_in_runtime(artifact, data["inputs"][:5])
    assert outputs.shape == (5, 10)
    assert np.isfinite(outputs).all()
    measured = artifact.card.fidelity
    assert measured is not None
    assert measured["samples"] == 360
    assert measured["accuracy_top1_reference"] > 0.95  # the zoo models are really trained
    assert measured["accuracy_drop_pp"] <= MAX_DROP_PP[artifact.variant.precision]
    assert measured["agreement_top1"] >= 0.97
    check_fidelity_budgets(
        artifact.card, {"accuracy_drop_pp": MAX_DROP_PP[artifact.variant.precision]}
    )
    assert artifact.card.precision == artifact.variant.precision
    return artifact


@pytest.mark.parametrize("spec", ONNX_VARIANTS)
@pytest.mark.parametrize("name", sorted(DIGITS))
def test_zoo_onnx_variants_convert_load_and_keep_accuracy(
    name: str, spec: str, zoo_cache: ArtifactCache
) -> None:
    artifact = check_variant(name, spec, zoo_cache, {"family": "compact"})
    assert artifact.card.declared == {"family": "compact"}


@pytest.mark.slow
@pytest.mark.parametrize("spec", TFLITE_VARIANTS)
@pytest.mark.parametrize("name", sorted(DIGITS))
def test_zoo_tflite_variants_convert_load_and_keep_accuracy(
    name: str, spec: str, zoo_cache: ArtifactCache
) -> None:
    artifact = check_variant(name, spec, zoo_cache)
    source_card = model_card(ZOO / DIGITS[name][0])
    assert artifact.card.params == source_card.params
    # Same input name and layout as the ONNX model: every variant takes the same data.
    assert artifact.card.inputs[0]["name"] == source_card.inputs[0]["name"]
    assert artifact.card.inputs[0]["shape"][1:] == source_card.inputs[0]["shape"][1:]
    assert artifact.card.inputs[0]["dtype"] == "float32"
    if spec == "tflite:int8-static":
        assert artifact.card.weight_types.get("float32", 0) == 0  # full integer
        assert artifact.card.ops["QUANTIZE"] >= 1


@pytest.fixture(scope="module")
def gpt_calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gpt") / "calib.npz"
    with np.load(ZOO / "tiny_gpt_prompts.npz") as prompts:
        np.savez(path, tokens=prompts["tokens"][:16])
    return path


# 32 prompts: one prompt is 3.1 points. Budgets per precision: top-1 agreement with FP32 on
# the token after each prompt, and the drop of next-token accuracy.
GPT_AGREEMENT = {"fp32": 0.96, "fp16": 0.96, "int8": 0.85}
GPT_MAX_DROP_PP = {"fp32": 0.0, "fp16": 3.2, "int8": 6.3}


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec",
    [
        "onnx:fp16",
        "onnx:int8-static",
        "onnx:int8-dynamic",
        "tflite:fp32",
        "tflite:fp16",
        "tflite:int8-dynamic",
    ],
)
def test_zoo_decoder_variants_follow_fp32(
    spec: str, zoo_cache: ArtifactCache, gpt_calibration: Path
) -> None:
    artifact = convert(
        ZOO / "tiny_gpt.onnx",
        Variant.parse(spec),
        calibration=gpt_calibration,
        dataset=ZOO / "tiny_gpt_prompts.npz",
        cache=zoo_cache,
    )
    measured = artifact.card.fidelity
    assert measured is not None
    precision = artifact.variant.precision
    assert measured["samples"] == 32
    assert measured["accuracy_top1_reference"] > 0.3  # the zoo's decoder is really trained
    assert measured["agreement_top1"] >= GPT_AGREEMENT[precision]
    assert measured["accuracy_drop_pp"] <= GPT_MAX_DROP_PP[precision]
    assert measured["cosine_min"] > 0.99
    with np.load(ZOO / "tiny_gpt_prompts.npz") as prompts:
        logits = run_in_runtime(artifact, prompts["tokens"][:1])
    assert logits.shape == (1, 128, 96)


def test_decoder_with_token_inputs_has_no_full_integer_tflite(gpt_calibration: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"tiny_gpt\.onnx: tflite:int8-static calibrates float.*'tokens', 'int64'"
    ):
        convert(ZOO / "tiny_gpt.onnx", Variant.parse("tflite:int8"), calibration=gpt_calibration)


# --- the artifact cache ----------------------------------------------------------------------


def mlp(path: Path, seed: int = 0) -> Path:
    """A small two-layer MLP, [batch, 16] -> [batch, 4], with random weights."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)
        for name, shape in [("w1", (16, 32)), ("b1", (32,)), ("w2", (32, 4)), ("b2", (4,))]
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def samples(path: Path, count: int = 40, width: int = 16, seed: int = 0) -> Path:
    np.savez(path, inputs=np.random.default_rng(seed).random((count, width), np.float32))
    return path


def test_same_request_twice_converts_once(tmp_path: Path) -> None:
    source, calibration = mlp(tmp_path / "m.onnx"), samples(tmp_path / "calib.npz")
    first_cache = ArtifactCache(tmp_path / "artifacts")
    first = convert(source, Variant.parse("onnx:int8"), calibration=calibration, cache=first_cache)
    assert (first_cache.stats.conversions, first_cache.stats.hits) == (1, 0)
    assert str(first.variant) == "onnx:int8-static"  # calibration given: static
    again = ArtifactCache(tmp_path / "artifacts")  # a later run: a new cache object
    second = convert(
        source, Variant.parse("onnx:int8-static"), calibration=calibration, cache=again
    )
    assert (again.stats.conversions, again.stats.hits) == (0, 1)
    assert second.path == first.path
    assert second.card == first.card


def test_sidecar_records_what_made_the_artifact(tmp_path: Path) -> None:
    source, calibration = mlp(tmp_path / "m.onnx"), samples(tmp_path / "calib.npz")
    cache = ArtifactCache(tmp_path / "artifacts")
    artifact = convert(source, Variant.parse("onnx:int8"), calibration=calibration, cache=cache)
    sidecar = json.loads(artifact.path.with_suffix(".json").read_text())
    request = sidecar["request"]
    assert request["source_sha256"] == sha256_file(source) == artifact.source_sha256
    assert request["calibration_sha256"] == sha256_file(calibration)
    assert request["converter"] == "onnxruntime"
    assert request["converter_version"] == ort.__version__
    assert request["options"]["quant_format"] == "QDQ"
    assert request["variant"] == "onnx:int8-static"
    assert sidecar["sha256"] == artifact.sha256
    assert sidecar["card"] == artifact.card.to_dict()
    # The FP32 source is stored by its hash too, and conversions read that copy.
    reference = convert(source, Variant("onnx", "fp32"), cache=cache)
    assert reference.path.read_bytes() == source.read_bytes()
    assert reference.sha256 == artifact.source_sha256


def test_what_changes_the_bytes_changes_the_request(tmp_path: Path) -> None:
    source, calibration = mlp(tmp_path / "m.onnx"), samples(tmp_path / "calib.npz")
    cache = ArtifactCache(tmp_path / "artifacts")
    base = convert(source, Variant.parse("onnx:int8"), calibration=calibration, cache=cache)
    other_data = samples(tmp_path / "other.npz", seed=1)
    recalibrated = convert(source, Variant.parse("onnx:int8"), calibration=other_data, cache=cache)
    assert cache.stats.conversions == 2
    assert recalibrated.sha256 != base.sha256
    # fp16 does not use calibration data: giving some must not split the cache.
    convert(source, Variant.parse("onnx:fp16"), calibration=calibration, cache=cache)
    convert(source, Variant.parse("onnx:fp16"), calibration=other_data, cache=cache)
    assert (cache.stats.conversions, cache.stats.hits) == (3, 1)
    retrained = mlp(tmp_path / "m.onnx", seed=5)  # same file name, new weights
    changed = convert(retrained, Variant.parse("onnx:fp16"), cache=cache)
    assert cache.stats.conversions == 4
    assert changed.source_sha256 != base.source_sha256


def test_a_deleted_artifact_is_converted_again(tmp_path: Path) -> None:
    source = mlp(tmp_path / "m.onnx")
    cache = ArtifactCache(tmp_path / "artifacts")
    first = convert(source, Variant.parse("onnx:fp16"), cache=cache)
    first.path.unlink()
    second = convert(source, Variant.parse("onnx:fp16"), cache=cache)
    assert cache.stats.conversions == 2
    assert second.path.is_file()


CONVERT_IN_A_PROCESS = """
import json, sys
from pathlib import Path
from fleet.artifacts import ArtifactCache, Variant, convert
cache = ArtifactCache(Path(sys.argv[1]))
calibration = Path(sys.argv[4]) if len(sys.argv) > 4 else None
convert(Path(sys.argv[2]), Variant.parse(sys.argv[3]), calibration=calibration, cache=cache)
print(json.dumps({"conversions": cache.stats.conversions, "hits": cache.stats.hits}))
"""


def convert_elsewhere(*args: Path | str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", CONVERT_IN_A_PROCESS, *map(str, args)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT)


def stats_of(process: subprocess.Popen[str]) -> dict[str, int]:
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0
    result: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return result


def test_a_later_process_finds_the_conversion(tmp_path: Path) -> None:
    source = mlp(tmp_path / "m.onnx")
    root = tmp_path / "artifacts"
    assert stats_of(convert_elsewhere(root, source, "onnx:fp16")) == {"conversions": 1, "hits": 0}
    assert stats_of(convert_elsewhere(root, source, "onnx:fp16")) == {"conversions": 0, "hits": 1}


@pytest.mark.slow
def test_two_processes_asking_at_once_convert_once(tmp_path: Path) -> None:
    source, calibration = mlp(tmp_path / "m.onnx"), samples(tmp_path / "calib.npz")
    root = tmp_path / "artifacts"
    convert(source, Variant("onnx", "fp32"), cache=ArtifactCache(root))
    # An onnx2tf run takes seconds, so the two requests overlap; the lock makes one wait.
    both = [convert_elsewhere(root, source, "tflite:int8", calibration) for _ in range(2)]
    results = [stats_of(p) for p in both]
    assert sum(r["conversions"] for r in results) == 1
    assert sum(r["hits"] for r in results) == 1


@pytest.mark.slow
def test_one_onnx2tf_run_serves_every_tflite_variant(tmp_path: Path) -> None:
    source, calibration = mlp(tmp_path / "m.onnx"), samples(tmp_path / "calib.npz")
    cache = ArtifactCache(tmp_path / "artifacts")
    # FP32 first: with calibration data at hand the same run makes the full-integer file.
    convert(source, Variant.parse("tflite:fp32"), calibration=calibration, cache=cache)
    assert cache.stats.conversions == 1
    for spec in ("tflite:fp32", "tflite:fp16", "tflite:int8-dynamic", "tflite:int8-static"):
        artifact = convert(source, Variant.parse(spec), calibration=calibration, cache=cache)
        assert str(artifact.variant) == spec
    assert cache.stats.conversions == 1
    assert cache.stats.hits == 4  # no converter started


# --- errors a user sees ----------------------------------------------------------------------


def test_corrupt_source_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    corrupt = tmp_path / "half-downloaded.onnx"
    corrupt.write_bytes(mlp(tmp_path / "m.onnx").read_bytes()[:100])
    cache = ArtifactCache(tmp_path / "artifacts")
    with pytest.raises(ConfigError, match=r"half-downloaded\.onnx: not a readable ONNX model"):
        convert(corrupt, Variant.parse("tflite:fp16"), cache=cache)
    with pytest.raises(ConfigError, match=r"missing\.onnx: model file not found"):
        convert(tmp_path / "missing.onnx", Variant.parse("onnx:fp16"), cache=cache)
    with pytest.raises(ConfigError, match=r"model\.tflite: fleet converts ONNX models"):
        convert(tmp_path / "model.tflite", Variant.parse("onnx:fp16"), cache=cache)
    assert cache.stats.conversions == 0


def test_unknown_variants_are_config_errors_listing_the_known_ones() -> None:
    for text in (
        "tflite:int4",
        "onnx:fp16-static",
        "coreml:fp16",
        "onnx",
        "onnx:int4-block48",
        "onnx:int8-block32",
        "tflite:int8-per-channel",
        "onnx:fp16-per-channel",
    ):
        with pytest.raises(ConfigError, match=r"unknown variant .*known variants: onnx:fp32"):
            Variant.parse(text)
    for text in (
        "onnx:fp32",
        "tflite:int8",
        "onnx:int8-dynamic",
        "tflite:int8-static",
        "onnx:int8-static-per-channel",
        "onnx:int8-per-channel",
        "onnx:int4",
        "onnx:int4-block128",
    ):
        assert str(Variant.parse(text)) == text


def test_static_int8_needs_fitting_calibration_data(tmp_path: Path) -> None:
    source = mlp(tmp_path / "m.onnx")
    cache = ArtifactCache(tmp_path / "artifacts")
    with pytest.raises(ConfigError, match=r"m\.onnx: onnx:int8-static calibrates on data"):
        convert(source, Variant.parse("onnx:int8-static"), cache=cache)
    wrong = samples(tmp_path / "images.npz", width=64)
    with pytest.raises(
        ConfigError, match=r"images\.npz: 'x' has shape \[40, 64\] but the model input 'x' is"
    ):
        convert(source, Variant.parse("onnx:int8"), calibration=wrong, cache=cache)
    unnamed = tmp_path / "unnamed.npz"
    np.savez(unnamed, data=np.zeros((4, 16), np.float32))
    with pytest.raises(ConfigError, match=r"unnamed\.npz: needs an array 'inputs'"):
        convert(source, Variant.parse("tflite:int8"), calibration=unnamed, cache=cache)
    assert cache.stats.conversions == 0


def custom_op_model(path: Path) -> Path:
    """Valid ONNX, but with an operator no converter or runtime knows."""
    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Frobnicate", ["h"], ["y"], domain="com.example"),
    ]
    graph = helper.make_graph(
        nodes,
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [weight],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_a_failed_onnx_conversion_names_model_variant_and_reason(tmp_path: Path) -> None:
    source = custom_op_model(tmp_path / "exotic.onnx")
    with pytest.raises(ConversionError, match=r"exotic\.onnx -> onnx:fp16: .*Frobnicate"):
        convert(source, Variant.parse("onnx:fp16"), cache=ArtifactCache(tmp_path / "a"))


@pytest.mark.slow
def test_a_failed_onnx2tf_run_names_model_variant_and_its_message(tmp_path: Path) -> None:
    source = custom_op_model(tmp_path / "exotic.onnx")
    cache = ArtifactCache(tmp_path / "artifacts")
    with pytest.raises(ConversionError) as failure:
        convert(source, Variant.parse("tflite:fp16"), cache=cache)
    message = str(failure.value)
    assert message.startswith(f"{source} -> tflite:fp16: onnx2tf failed")
    assert "Frobnicate" in message  # onnx2tf's own words
    assert "\n" not in message
    log = Path(message.rsplit("log: ", 1)[1])
    assert "Frobnicate" in log.read_text()  # the whole converter output is kept
    assert not list(cache.root.glob("*.tflite"))


# --- fidelity --------------------------------------------------------------------------------


def shuffled_classes(path: Path) -> Path:
    """The zoo MLP with its output classes permuted: same model card, wrong answers."""
    model = onnx.load(ZOO / "digits_mlp.onnx")
    for tensor in model.graph.initializer:
        if tensor.name in ("2.weight", "2.bias"):
            array = numpy_helper.to_array(tensor)
            tensor.CopyFrom(numpy_helper.from_array(np.roll(array, 3, axis=0), tensor.name))
    onnx.save(model, path)
    return path


def as_artifact(path: Path) -> Artifact:
    card = replace(model_card(path), variant="onnx:fp32")
    return Artifact(path, sha256_file(path), Variant("onnx", "fp32"), card, sha256_file(path))


def test_fidelity_measures_a_real_accuracy_drop_and_the_budget_refuses_it(tmp_path: Path) -> None:
    reference = as_artifact(ZOO / "digits_mlp.onnx")
    broken = as_artifact(shuffled_classes(tmp_path / "shuffled.onnx"))
    measured = fidelity(reference, broken, ZOO / "digits_test.npz")
    assert measured["accuracy_top1_reference"] > 0.95
    assert measured["accuracy_top1"] < 0.3
    assert measured["accuracy_drop_pp"] > 60
    assert measured["agreement_top1"] < 0.3
    assert measured["cosine_min"] < 0.9
    card = replace(broken.card, fidelity=measured)
    with pytest.raises(FidelityBudgetError, match=r"onnx:fp32 of .*accuracy drop .* pp"):
        check_fidelity_budgets(card, {"accuracy_drop_pp": 2.0})
    same = fidelity(reference, reference, ZOO / "digits_test.npz")
    assert same["agreement_top1"] == 1.0
    assert same["max_abs_error"] == 0.0
    check_fidelity_budgets(replace(reference.card, fidelity=same), {"accuracy_drop_pp": 0.0})


def test_without_labels_the_budget_uses_disagreement(tmp_path: Path) -> None:
    unlabeled = tmp_path / "unlabeled.npz"
    with np.load(ZOO / "digits_test.npz") as data:
        np.savez(unlabeled, inputs=data["inputs"])
    reference = as_artifact(ZOO / "digits_mlp.onnx")
    broken = as_artifact(shuffled_classes(tmp_path / "shuffled.onnx"))
    measured = fidelity(reference, broken, unlabeled)
    assert "accuracy_drop_pp" not in measured
    with pytest.raises(FidelityBudgetError, match="disagreement with FP32"):
        check_fidelity_budgets(replace(broken.card, fidelity=measured), {"accuracy_drop_pp": 5.0})
    with pytest.raises(ConfigError, match="no fidelity in its model card"):
        check_fidelity_budgets(broken.card, {"accuracy_drop_pp": 5.0})


def test_fidelity_is_measured_again_for_a_new_data_set_only(tmp_path: Path) -> None:
    source = ZOO / "digits_mlp.onnx"
    cache = ArtifactCache(tmp_path / "artifacts")
    first = convert(
        source, Variant.parse("onnx:fp16"), cache=cache, dataset=ZOO / "digits_test.npz"
    )
    half = tmp_path / "half.npz"
    with np.load(ZOO / "digits_test.npz") as data:
        np.savez(half, inputs=data["inputs"][:100], labels=data["labels"][:100])
    second = convert(source, Variant.parse("onnx:fp16"), cache=cache, dataset=half)
    assert (cache.stats.conversions, cache.stats.hits) == (1, 1)
    assert first.card.fidelity is not None and first.card.fidelity["samples"] == 360
    assert second.card.fidelity is not None and second.card.fidelity["samples"] == 100
    stored = json.loads(second.path.with_suffix(".json").read_text())["card"]
    assert stored == second.card.to_dict()


# --- the command line ------------------------------------------------------------------------


def test_convert_command_prints_a_row_per_variant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_CACHE", str(tmp_path / "cache"))
    args = [
        str(ZOO / "digits_mlp.onnx"),
        "--to",
        "onnx:fp16,onnx:int8,onnx:int8-dynamic",
        "--calibration",
        str(ZOO / "digits_calib.npz"),
        "--dataset",
        str(ZOO / "digits_test.npz"),
    ]
    result = CliRunner().invoke(convert_command, args)
    assert result.exit_code == 0, result.output
    header, *rows = result.output.strip().splitlines()
    assert header.split() == [
        "variant",
        "precision",
        "size_mb",
        "params",
        "sha256",
        "fidelity",
        "drop_pp",
        "path",
    ]
    assert [row.split()[0] for row in rows] == [
        "onnx:fp16",
        "onnx:int8-static",
        "onnx:int8-dynamic",
    ]
    for row in rows:
        cells = row.split()
        assert cells[3] == "4810"
        assert Path(cells[7]).is_file()
        assert str(tmp_path / "cache" / "artifacts") in cells[7]
        assert float(cells[5].rstrip("%")) > 97
    bad = CliRunner().invoke(convert_command, [str(ZOO / "digits_mlp.onnx"), "--to", "tflite:int4"])
    assert isinstance(bad.exception, ConfigError)


def test_a_model_from_before_ir_4_converts_to_onnx_variants(tmp_path: Path) -> None:
    """Old exporters (IR 3, opset <= 8 era) list every weight as a graph input too."""
    rng = np.random.default_rng(3)
    weight = numpy_helper.from_array(rng.normal(size=(64, 10)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "old",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [64, 10]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)])
    model.ir_version = 3
    source = tmp_path / "old.onnx"
    onnx.save(model, source)
    cache = ArtifactCache(tmp_path / "cache")
    x = rng.random((1, 64), dtype=np.float32)
    expected = x @ numpy_helper.to_array(weight)
    for spec in ("onnx:fp16", "onnx:int8-dynamic"):
        artifact = convert(source, Variant.parse(spec), cache=cache)
        assert artifact.card.precision == spec.split(":")[1].split("-")[0]
        got = run_in_runtime(artifact, x)
        assert np.allclose(got, expected, atol=0.05 * np.abs(expected).max())
