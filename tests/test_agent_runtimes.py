"""The agent's runtimes and accuracy pass on real models: ONNX Runtime and LiteRT, FP32, FP16
and INT8 variants made by fleet's own converter, and a TFLite model with int8 inputs/outputs."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from jobs import make_case, settings

from fleet import paths
from fleet.artifacts import Variant, convert
from fleet.artifacts.converter_env import converter_python
from fleet_agent import accuracy, distributions, protocol, runtimes, sysinfo

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo"
CNN = ZOO / "digits_cnn.onnx"
CNN_TEST = ZOO / "digits_cnn_test.npz"
CNN_CALIB = ZOO / "digits_cnn_calib.npz"


def variant(spec: str) -> Path:
    return convert(CNN, Variant.parse(spec), calibration=CNN_CALIB).path


@pytest.fixture(scope="module")
def int8_io_tflite() -> Path:
    """digits_cnn fully integer, int8 inputs and outputs too (onnx2tf's
    *_full_integer_quant.tflite, which fleet's converter does not produce: models from
    elsewhere often come this way). Built once into the cache."""
    target = paths.cache_dir() / "test-models" / "digits_cnn_int8_io.tflite"
    if target.exists():
        return target
    work = target.parent / "onnx2tf-work"
    work.mkdir(parents=True, exist_ok=True)
    calib = work / "calib.npy"
    np.save(calib, np.load(CNN_CALIB)["inputs"].astype(np.float32))
    source = work / CNN.name  # onnx2tf simplifies its input in place: never the zoo's file
    shutil.copyfile(CNN, source)
    python = converter_python()
    subprocess.run(
        [
            *(str(python), "-m", "onnx2tf", "-i", str(source), "-o", str(work), "-kat", "input"),
            *("-oiqt", "-qt", "per-channel", "-cind", "input", str(calib), "[0.0]", "[1.0]"),
        ],
        check=True,
        capture_output=True,
        cwd=work,
        env={**os.environ, "PATH": f"{python.parent}:{os.environ['PATH']}"},
    )
    (work / "digits_cnn_full_integer_quant.tflite").rename(target)
    return target


def load(path: Path, provider: str = "cpu", threads: int = 1, **options) -> runtimes.Session:
    runtime = "litert" if path.suffix == ".tflite" else "onnxruntime"
    return runtimes.open_session(
        runtime, str(path), settings(provider=provider, threads=threads, **options)
    )


def case(path: Path, tmp_path: Path, reference: Path | None = None) -> protocol.Case:
    return make_case(
        path.stem,
        path,
        dataset=str(CNN_TEST),
        save_outputs=str(tmp_path / "out.npy") if reference is None else None,
        reference=str(reference) if reference else None,
    )


# ---------------------------------------------------------------- ONNX Runtime


def test_ort_reports_the_provider_that_ran_and_its_version():
    session = load(CNN)
    assert session.provider == "cpu"
    assert session.version == importlib.import_module("onnxruntime").__version__
    assert session.inputs == [("input", (None, 1, 8, 8), np.float32)]


def test_ort_missing_or_unknown_provider_is_a_skip_with_the_reason():
    with pytest.raises(runtimes.RuntimeMissing, match="has no CUDAExecutionProvider on this"):
        load(CNN, "cuda")
    with pytest.raises(runtimes.RuntimeMissing, match="unknown provider 'npu'; known: cpu"):
        load(CNN, "npu")


def test_ort_settings_are_checked():
    with pytest.raises(ValueError, match="graph_optimization_level 'max': use one of disable"):
        load(CNN, graph_optimization_level="max")
    for level in ("disable", "basic", "extended", "all"):
        session = load(CNN, threads=2, inter_op_threads=2, graph_optimization_level=level)
        assert session.run(session.adopt(None, 2, 0))[0].shape == (2, 10)


def test_ort_unreadable_model_is_invalid(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf")
    with pytest.raises(runtimes.InvalidModel):
        load(bad)


def test_inputs_made_from_the_card_are_used_when_they_fit():
    session = load(CNN)
    spec = runtimes.spec_from_card(
        [{"name": "input", "dtype": "float32", "shape": ["batch", 1, 8, 8]}]
    )
    assert spec == [("input", (None, 1, 8, 8), np.float32)]
    arrays = list(runtimes.feed_for(spec, 3, seed=5).values())
    feed = session.adopt(arrays, 3, seed=5)
    assert np.shares_memory(feed["input"], arrays[0])  # the very arrays, not copies
    # A card that does not describe this model (NHWC here) gives way to the model's inputs.
    wrong = [np.zeros((3, 8, 8, 1), np.float32)]
    assert session.adopt(wrong, 3, seed=5)["input"].shape == (3, 1, 8, 8)
    assert runtimes.spec_from_card(None) is None
    assert runtimes.spec_from_card([{"name": "x"}]) is None


def test_installed_runtimes_come_from_package_metadata():
    found = sysinfo.runtimes_installed()
    assert found["onnxruntime"] == importlib.import_module("onnxruntime").__version__
    assert found["numpy"] == np.__version__
    assert "ai_edge_litert" in found
    assert "tflite_runtime" not in found  # only the old-board venv has it
    # Read from folder names: what importlib.metadata finds in the folders' metadata files.
    from importlib import metadata

    expected: dict[str, str] = {}
    for module, names in distributions.DISTRIBUTIONS.items():
        for name in names:
            with contextlib.suppress(metadata.PackageNotFoundError):
                expected.setdefault(module, metadata.version(name))
    assert found == expected


def test_installed_versions_from_metadata_folder_names(tmp_path: Path) -> None:
    first, second, develop = tmp_path / "first", tmp_path / "second", tmp_path / "src"
    for folder, names in (
        # pip spells a distribution's "-" as "_"; old pips kept its case
        (first, ["onnxruntime_gpu-1.18.1.dist-info", "AI_Edge_LiteRT-1.2.0.dist-info"]),
        # Debian's python3-numpy: an egg-info named with its Python
        (first, ["numpy-1.21.5-py3.8.egg-info", "requests-2.31.0.dist-info"]),
        (second, ["onnxruntime-1.16.0.dist-info", "numpy-2.0.0.dist-info"]),
        (develop, ["tflite_runtime.egg-info"]),  # `setup.py develop`: no version in the name
    ):
        for name in names:
            (folder / name).mkdir(parents=True)
    (develop / "tflite_runtime.egg-info" / "PKG-INFO").write_text(
        "Metadata-Version: 2.1\nName: tflite-runtime\nVersion: 2.14.0\n\nVersion: 0\n"
    )
    (tmp_path / "python38.zip").write_bytes(b"PK")  # a zip on sys.path is no folder to list
    path = [str(tmp_path / "python38.zip"), str(first), str(tmp_path / "gone"), str(second)]
    assert distributions.installed([*path, str(develop)]) == {
        "numpy": "1.21.5",  # the first folder that has it, as for importlib.metadata
        "onnxruntime": "1.16.0",  # the module's own distribution before a vendor build
        "ai_edge_litert": "1.2.0",
        "tflite_runtime": "2.14.0",
    }
    assert distributions.installed([str(tmp_path / "gone")]) == {}


@pytest.mark.parametrize("spec", ["onnx:fp16", "onnx:int8", "onnx:int8-dynamic"])
def test_accuracy_of_onnx_variants_against_the_fp32_reference(spec, tmp_path):
    reference_fields = accuracy.evaluate(load(CNN), case(CNN, tmp_path))
    assert reference_fields["accuracy_top1"] == pytest.approx(0.9833, abs=1e-4)  # zoo card
    assert reference_fields["accuracy_samples"] == 360.0
    fields = accuracy.evaluate(load(variant(spec)), case(CNN, tmp_path, tmp_path / "out.npy"))
    assert fields["accuracy_top1"] > 0.95 and fields["accuracy_top5"] > 0.99
    assert fields["agreement_top1"] > 0.95
    assert 0.9 < fields["cosine_min"] <= fields["cosine_mean"] <= 1.0 + 1e-9
    assert fields["max_abs_error"] > 0  # a different precision is not bit-identical
    assert 0 < fields["snr_db"] < accuracy.MAX_DB  # close, and not identical
    if spec == "onnx:fp16":
        assert fields["cosine_min"] > 0.999
        assert fields["snr_db"] > 40  # half precision keeps about 3 decimal digits


def test_snr_is_signal_power_over_error_power_in_decibels():
    reference = np.ones((4, 10))
    assert accuracy.snr_db(reference, reference * 1.1) == pytest.approx(20.0)  # error 1/10
    assert accuracy.snr_db(reference, reference * 2.0) == pytest.approx(0.0)
    assert accuracy.snr_db(reference, reference) == accuracy.MAX_DB  # identical: finite
    assert accuracy.snr_db(np.zeros((4, 10)), reference) == -accuracy.MAX_DB


def test_accuracy_refuses_a_reference_of_another_shape(tmp_path):
    np.save(tmp_path / "ref.npy", np.zeros((360, 4), np.float32))
    fields = accuracy.evaluate(load(CNN), case(CNN, tmp_path, tmp_path / "ref.npy"))
    # Scoring comes after timing: it says what failed, and the case keeps its latency.
    assert fields["accuracy_error"].startswith(f"accuracy step failed on data set {CNN_TEST}")
    assert "reference outputs are [360, 4] but this variant" in fields["accuracy_error"]


def test_accuracy_needs_a_known_data_set_layout(tmp_path):
    np.savez(tmp_path / "odd.npz", pictures=np.zeros((2, 64), np.float32))
    fields = accuracy.evaluate(load(CNN), make_case("odd", CNN, dataset=str(tmp_path / "odd.npz")))
    assert set(fields) == {"accuracy_error"}
    assert (
        "needs an array 'inputs' (the model has one input) or arrays named after the"
        in (fields["accuracy_error"])
    )
    assert "it has ['pictures']" in fields["accuracy_error"]


# ---------------------------------------------------------------- LiteRT


@pytest.mark.slow
def test_litert_runs_xnnpack_by_default_and_builtin_kernels_on_request(tmp_path):
    path = variant("tflite:fp32")
    session = load(path)
    assert (session.runtime, session.package, session.provider) == (
        "litert",
        "ai_edge_litert",
        "xnnpack",
    )
    assert session.version == importlib.import_module("ai_edge_litert").__version__
    feed = session.adopt(None, 8, seed=0)  # TFLite files say batch 1: resized here
    assert session.run(feed)[0].shape == (8, 10)
    builtin = load(path, "builtin")
    assert builtin.provider == "builtin"
    same = builtin.adopt(None, 8, seed=0)
    np.testing.assert_allclose(builtin.run(same)[0], session.run(feed)[0], atol=1e-4)


@pytest.mark.slow
# LiteRT's Delegate prints a traceback from __del__ when it is built from a bad library.
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_litert_delegates_need_a_library_that_loads():
    path = variant("tflite:fp32")
    with pytest.raises(runtimes.RuntimeMissing, match=r"set measure\.delegate_path"):
        load(path, "gpu")
    with pytest.raises(runtimes.RuntimeMissing, match=r"cannot load delegate /nonexistent\.so"):
        load(path, "gpu", delegate_path="/nonexistent.so")
    with pytest.raises(runtimes.RuntimeMissing, match=r"libm\.so\.6: it is not a TFLite delegate"):
        load(path, "gpu", delegate_path="libm.so.6")


def test_litert_unreadable_model_is_invalid(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(os.urandom(256))
    with pytest.raises(runtimes.InvalidModel, match="not a valid Flatbuffer"):
        load(bad)


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec", ["tflite:fp32", "tflite:fp16", "tflite:int8", "tflite:int8-dynamic"]
)
def test_accuracy_of_tflite_variants(spec, tmp_path):
    accuracy.evaluate(load(CNN), case(CNN, tmp_path))
    fields = accuracy.evaluate(load(variant(spec)), case(CNN, tmp_path, tmp_path / "out.npy"))
    assert fields["accuracy_top1"] > 0.95
    assert fields["agreement_top1"] > 0.95 and fields["cosine_min"] > 0.9


@pytest.mark.slow
def test_int8_inputs_and_outputs_are_quantized_and_dequantized(int8_io_tflite, tmp_path):
    session = load(int8_io_tflite)
    detail = session._input_details[0]
    assert detail["dtype"] == np.int8 and detail["quantization"][0] > 0
    # The agent makes float inputs; they are quantized once, before any timing.
    assert session.inputs[0][2] == np.float32
    feed = session.adopt(None, 4, seed=0)
    assert next(iter(feed.values())).dtype == np.int8
    outputs = session.run(feed)[0]
    assert outputs.dtype == np.float32 and outputs.shape == (4, 10)
    accuracy.evaluate(load(CNN), case(CNN, tmp_path))
    fields = accuracy.evaluate(session, case(CNN, tmp_path, tmp_path / "out.npy"))
    assert fields["accuracy_top1"] > 0.95
    assert fields["agreement_top1"] > 0.95 and fields["cosine_min"] > 0.9
