"""Issue 13 on real pretrained models (zoo/pretrained.py): the MiniLM sentence encoder judged
by cosine with a min_cosine budget, its quantized cards, and the PP-OCR text detector's NCHW
output compared with onnx2tf's NHWC one. Conversions go to the shared artifact cache (keyed
by content), so a machine pays each one once."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from fleet.artifacts import (
    Artifact,
    FidelityBudgetError,
    Variant,
    check_fidelity_budgets,
    convert,
)

ZOO = Path(__file__).resolve().parents[1] / "zoo"
MIN_COSINE = 0.98  # suites/encoder.yaml's budget

pytestmark = pytest.mark.slow


def ensure(name: str) -> Path:
    spec = importlib.util.spec_from_file_location("zoo_pretrained", ZOO / "pretrained.py")
    assert spec is not None and spec.loader is not None
    module: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder: Path = module.ensure(name)
    return folder


# Pretrained model -> (its file, calibration set, data set, task), as zoo/pretrained.py builds.
MODELS = {
    "minilm": ("minilm_l6.onnx", "minilm_calib.npz", "minilm_sentences.npz", "embedding"),
    "ppocr_det": ("ppocr_det.onnx", "ppocr_calib.npz", "ppocr_images.npz", "tensor"),
}


def converted(model: str, spec: str) -> Artifact:
    """A variant of a pretrained model, its fidelity measured on the model's data set."""
    folder = ensure(model)
    source, calibration, dataset, task = MODELS[model]
    return convert(
        folder / source,
        Variant.parse(spec),
        calibration=folder / calibration,
        dataset=folder / dataset,
        task=task,
    )


@pytest.mark.parametrize(
    ("spec", "kept"),
    [
        ("onnx:fp16", True),  # cosine_mean 1.000 (measured on this machine)
        ("onnx:int8-dynamic-per-channel", True),  # 0.992
        ("onnx:int4", False),  # 0.969 (block 32)
        ("onnx:int8-dynamic", False),  # 0.965
        ("onnx:int8-static", False),  # 0.920
    ],
)
def test_min_cosine_refuses_the_encoder_variants_below_it(spec: str, kept: bool) -> None:
    artifact = converted("minilm", spec)
    measured = artifact.card.fidelity
    assert measured is not None
    assert measured["task"] == "embedding" and measured["samples"] == 48
    # Judged as embeddings: no argmax over 384 dimensions, a neighbour search instead.
    assert "agreement_top1" not in measured and "accuracy_drop_pp" not in measured
    assert measured["neighbour_agreement"] >= 0.9
    assert measured["cosine_min"] > 0.85
    if kept:
        check_fidelity_budgets(artifact.card, {"min_cosine": MIN_COSINE})
    else:
        with pytest.raises(FidelityBudgetError, match=r"cosine_mean 0\.9[0-7]"):
            check_fidelity_budgets(artifact.card, {"min_cosine": MIN_COSINE})
    # Quantized cards name the quantized precision, whatever stays float (the embeddings).
    assert artifact.card.precision == artifact.variant.precision
    assert artifact.card.params == 22_565_376


@pytest.mark.parametrize("spec", ["tflite:fp32", "tflite:fp16", "tflite:int8-dynamic"])
def test_a_vision_network_with_nchw_outputs_passes_tflite_fidelity(spec: str) -> None:
    artifact = converted("ppocr_det", spec)
    assert artifact.card.inputs[0]["shape"] == [1, 3, 320, 320]  # fixed from the data set
    # onnx2tf 1.29 kept the maps NCHW but wrote the pooled vector channel-last, as issue 13
    # saw an ImageNet classifier's [N, 1000, 1, 1] become [N, 1, 1, 1000].
    shapes = sorted(o["shape"] for o in artifact.card.outputs)
    assert shapes == [[1, 1, 1, 384], [1, 1, 320, 320], [1, 96, 80, 80]]
    measured = artifact.card.fidelity
    assert measured is not None and "error" not in measured
    assert measured["task"] == "tensor" and measured["samples"] == 6
    assert not {"agreement_top1", "cosine_min"} & measured.keys()  # judged as tensors
    # Every output compared, each in FP32's NCHW layout whatever onnx2tf wrote.
    per_output = measured["outputs"]
    assert set(per_output) == {"sigmoid_0.tmp_0", "features", "pooled"}
    minimum = {"tflite:fp32": 100.0, "tflite:fp16": 25.0, "tflite:int8-dynamic": 12.0}[spec]
    assert min(m["snr_db"] for m in per_output.values()) > minimum
    check_fidelity_budgets(artifact.card, {"min_snr_db": minimum})
