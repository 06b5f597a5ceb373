"""The variant matrix end to end: conversion, push, every runtime, accuracy against FP32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from fleet.cli import main
from fleet.results.store import Store

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo"

pytestmark = pytest.mark.slow


def test_vision_suite_measures_twelve_variants_per_lab_device(lab: Path, tmp_path: Path) -> None:
    store_path = tmp_path / "results.sqlite"
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(ROOT / "suites" / "vision.yaml"),
            "--inventory",
            str(lab / "inventory.yaml"),
            "--devices",
            "lab",
            "--store",
            str(store_path),
        ],
    )
    assert result.exit_code == 0, result.output
    results = Store(store_path).records(measurement="result")
    assert len(results) == 36
    expected = {
        (model, f"{fmt}:{precision}")
        for model in ("digits_mlp", "digits_cnn")
        for fmt in ("onnx", "tflite")
        for precision in ("fp32", "fp16", "int8")
    }
    for device in ("lab1", "lab2", "lab3"):
        mine = [r for r in results if r.tags["device"] == device]
        assert {(r.tags["model"], f"{r.tags['format']}:{r.tags['precision']}") for r in mine} == (
            expected
        )
        for r in mine:
            assert r.status == "ok", r.fields.get("message")
            assert r.tags["runtime"] == ("onnxruntime" if r.tags["format"] == "onnx" else "litert")
            # int8 with calibration data is static: the variant as converted is its series.
            mode = "-static" if r.tags["precision"] == "int8" else ""
            assert r.tags["variant"] == f"{r.tags['format']}:{r.tags['precision']}{mode}"
            assert r.fields["accuracy_top1"] > 0.95
            if (r.tags["format"], r.tags["precision"]) == ("onnx", "fp32"):
                assert "accuracy_drop_pp" not in r.fields
            else:  # compared on the device with the FP32 outputs of the same run
                assert abs(r.fields["accuracy_drop_pp"]) < 2
                assert r.fields["agreement_top1"] > 0.97
                assert r.fields["cosine_min"] > 0.9
    sizes = {
        (r.tags["format"], r.tags["precision"]): r.fields["model_size_mb"]
        for r in results
        if r.tags["model"] == "digits_cnn"
    }
    assert sizes[("onnx", "int8")] < sizes[("onnx", "fp32")]
    assert sizes[("tflite", "fp16")] < sizes[("tflite", "fp32")]


def outlier_mlp(path: Path) -> Path:
    """The digits MLP with one huge weight on a pixel that is always 0: FP32 predicts as
    before, but per-tensor INT8 weights round every other weight of that layer to zero."""
    model = onnx.load(ZOO / "digits_mlp.onnx")
    (weight,) = [i for i in model.graph.initializer if i.name == "0.weight"]
    values = numpy_helper.to_array(weight).copy()
    assert float(np.load(ZOO / "digits_test.npz")["inputs"][:, 0].max()) == 0.0
    values[0, 0] = 1e4
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(model, path)
    return path


def test_variant_over_the_accuracy_budget_is_refused_before_device_time(
    tmp_path: Path, fleet_home: Path
) -> None:
    outlier_mlp(tmp_path / "outlier.onnx")
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"""
name: refusal
measure: {{min_iterations: 50, repetitions: 1}}
models:
  - name: outlier
    path: outlier.onnx
    dataset: {ZOO / "digits_test.npz"}
    variants: [onnx:fp32, onnx:int8-dynamic]
budgets: {{accuracy_drop_pp: 2}}
""")
    result = CliRunner().invoke(main, ["run", str(suite)])
    assert result.exit_code == 1, result.output
    assert "REFUSED" in result.output
    by_variant = {
        r.tags["precision"]: r
        for r in Store(fleet_home / "results.sqlite").records(measurement="result")
    }
    assert by_variant["fp32"].status == "ok"
    assert by_variant["fp32"].fields["accuracy_top1"] > 0.95
    refused = by_variant["int8"]
    assert refused.status == "refused"
    assert "the budget accuracy_drop_pp 2" in str(refused.fields["message"])
    assert refused.tags["variant"] == "onnx:int8-dynamic"
    assert "latency_ms_p50" not in refused.fields  # it never ran
