"""suites/encoder.yaml end to end on a lab device: the zoo's pretrained MiniLM encoder in every
ONNX precision at two sequence lengths and its LiteRT variants, judged by cosine against
FP32, with the suite's min_cosine budget refusing the variants below it before device time.
Short timings (the suite's settings cut down): the point is the path, not the figures."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from fleet.cli import main
from fleet.results.store import Store

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def built_suite(tmp_path: Path, name: str = "encoder", model: str = "minilm") -> Path:
    """suites/NAME.yaml with the built model's paths and a few iterations per case."""
    spec = importlib.util.spec_from_file_location("zoo_pretrained", ROOT / "zoo" / "pretrained.py")
    assert spec is not None and spec.loader is not None
    zoo: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo)
    folder = zoo.ensure(model)
    suite = yaml.safe_load((ROOT / "suites" / f"{name}.yaml").read_text())
    suite["measure"].update(warmup_iterations=2, min_iterations=5, max_seconds=0.5)
    for entry in suite["models"]:
        for key in ("path", "dataset", "calibration"):
            if key in entry:
                entry[key] = str(folder / Path(entry[key]).name)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


# The heaviest end-to-end test: six ONNX precisions at two lengths and four LiteRT variants
# of a 90 MB transformer, each loaded and judged on the device; 15 min with both cores busy.
@pytest.mark.timeout(1800)
def test_encoder_suite_on_the_lab(lab: Path, tmp_path: Path, fleet_home: Path) -> None:
    store_path = tmp_path / "results.sqlite"
    args = ["run", str(built_suite(tmp_path)), "--inventory", str(lab / "inventory.yaml")]
    result = CliRunner().invoke(main, [*args, "--devices", "lab1", "--store", str(store_path)])
    assert result.exit_code == 1, result.output  # refused variants fail the run, nothing else
    results = Store(store_path).records(measurement="result")
    by_case = {(r.tags["model"], r.tags["variant"], r.tags.get("shape", "")): r for r in results}
    refused = {variant for (_, variant, _), r in by_case.items() if r.status == "refused"}
    assert {"onnx:int8-dynamic", "onnx:int8-static"} <= refused
    assert not refused & {"onnx:fp32", "onnx:fp16", "onnx:int8-dynamic-per-channel", "tflite:fp32"}
    for (_, variant, _), r in by_case.items():
        if r.status == "refused":
            assert "min_cosine 0.98" in r.fields["message"]
            continue
        assert r.status == "ok", r.fields.get("message")
        assert r.fields["latency_ms_p50"] > 0.1  # a transformer at a real length, not 1 token
        if variant != "onnx:fp32":
            assert r.fields["cosine_mean"] >= 0.98
    onnx_kept = {(v, s) for (m, v, s), r in by_case.items() if m == "minilm" and r.status == "ok"}
    lengths = {s for _, s in onnx_kept}
    assert len(lengths) == 2  # seq 32 and 128, each its own series
    assert {v for v, _ in onnx_kept} >= {"onnx:fp32", "onnx:fp16"}
    litert = {v for (m, v, _), r in by_case.items() if m == "minilm_litert" and r.status == "ok"}
    assert {"tflite:fp32", "tflite:fp16"} <= litert


def test_ocr_suite_judges_nchw_outputs_on_the_lab(
    lab: Path, tmp_path: Path, fleet_home: Path
) -> None:
    """suites/ocr.yaml: PP-OCRv4's three NCHW outputs, TFLite ones compared in FP32's layout;
    min_snr_db 20 keeps tflite:fp32 and fp16 and refuses the rest (docs/measurement.md)."""
    store_path = tmp_path / "results.sqlite"
    suite = built_suite(tmp_path, "ocr", "ppocr_det")
    args = ["run", str(suite), "--inventory", str(lab / "inventory.yaml"), "--devices", "lab1"]
    result = CliRunner().invoke(main, [*args, "--store", str(store_path)])
    assert result.exit_code == 1, result.output  # the refused variants, nothing else
    results = Store(store_path).records(measurement="result")
    status = {r.tags["variant"]: r.status for r in results}
    assert status == {
        "onnx:fp32": "ok",
        "tflite:fp32": "ok",
        "tflite:fp16": "ok",
        "onnx:fp16": "refused",
        "onnx:int8-static": "refused",
        "tflite:int8-dynamic": "refused",
    }
    for r in results:
        if r.status == "refused":
            assert "is below the budget min_snr_db 20" in r.fields["message"]
