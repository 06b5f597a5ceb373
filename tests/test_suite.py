from __future__ import annotations

from pathlib import Path

import pytest

from fleet.artifacts.variant import Variant
from fleet.errors import ConfigError
from fleet.inventory import load_inventory
from fleet.plan import make_plan
from fleet.suite import check_budgets, load_suite

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "zoo" / "digits_mlp.onnx"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text.replace("MODEL", str(MODEL)))
    return path


def test_smoke_suite_loads_with_paths_relative_to_the_suite() -> None:
    suite = load_suite(ROOT / "suites" / "smoke.yaml")
    (model,) = suite.models
    assert model.path == MODEL
    assert model.dataset == ROOT / "zoo" / "digits_test.npz"
    assert model.variants == (Variant("onnx", "fp32"),)
    assert suite.budgets["p95_ms"] > 0


def test_class_overrides_and_model_budgets_win(tmp_path: Path) -> None:
    suite = load_suite(
        write(
            tmp_path,
            """
name: s
measure: {threads: 2}
budgets: {p95_ms: 10, peak_ram_mb: 500}
classes:
  pi: {measure: {threads: 4}, budgets: {p95_ms: 40}}
models:
  - {name: m, path: MODEL, budgets: {peak_ram_mb: 100}}
""",
        )
    )
    model = suite.models[0]
    assert suite.measure_for("pi")["threads"] == 4
    assert suite.measure_for("gpu")["threads"] == 2
    assert suite.measure_for("gpu")["warmup_iterations"] == 10  # default
    assert suite.budgets_for(model, "pi") == {"p95_ms": 40.0, "peak_ram_mb": 100.0}


def test_plan_runs_the_fp32_reference_first(tmp_path: Path) -> None:
    suite = load_suite(
        write(
            tmp_path,
            """
name: s
models:
  - {name: m, path: MODEL, variants: ["tflite:int8", "onnx:fp16", "onnx:fp32"]}
""",
        )
    )
    plan = make_plan(suite, load_inventory(None).select(["local"]))
    assert [c.id for c in plan.devices[0].cases] == ["m/onnx:fp32", "m/tflite:int8", "m/onnx:fp16"]
    assert [c.runtime for c in plan.devices[0].cases] == ["onnxruntime", "litert", "onnxruntime"]


def test_budgets_judge_only_what_was_measured() -> None:
    fields = {"latency_ms_p95": 12.0, "peak_rss_mb": 90.0, "accuracy_top1": 0.9}
    assert check_budgets(fields, {"p95_ms": 10, "peak_ram_mb": 100}) == ["p95_ms: 12 > 10"]
    assert check_budgets(fields, {"min_accuracy_top1": 0.95}) == ["min_accuracy_top1: 0.9 < 0.95"]
    assert check_budgets(fields, {"accuracy_drop_pp": 1}) == []  # no reference: not judged


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: []\nname: s\n", r"suite.yaml:1: 'models' must be a non-empty list"),
        (
            "name: s\nmodels:\n  - {name: m, path: nope.onnx}\n",
            r"suite.yaml:3: path file 'nope.onnx' not found",
        ),
        (
            "name: s\nmodels:\n  - {name: m, path: MODEL, variants: [onnx:int3]}\n",
            r"suite.yaml:3: unknown variant 'onnx:int3'",
        ),
        (
            "name: s\nmeasure:\n  iterations: 5\nmodels:\n  - {name: m, path: MODEL}\n",
            r"suite.yaml:3: unknown key 'iterations' in measure; expected one of .*min_iterations",
        ),
        (
            "name: s\nmeasure:\n  min_iterations: many\nmodels:\n  - {name: m, path: MODEL}\n",
            r"suite.yaml:3: measure.min_iterations must be a positive int",
        ),
        (
            "name: s\nbudgets:\n  p95: 3\nmodels:\n  - {name: m, path: MODEL}\n",
            r"suite.yaml:3: unknown key 'p95' in budgets",
        ),
        (
            "name: s\nbudgets:\n  p95_ms: fast\nmodels:\n  - {name: m, path: MODEL}\n",
            r"suite.yaml:3: budget p95_ms must be a number",
        ),
        (
            "name: s\nmodels:\n  - {name: m, path: MODEL}\n  - {name: m, path: MODEL}\n",
            r"model name 'm' appears twice",
        ),
        ("name: s\nmodels:\n  - {name: m}\n", r"suite.yaml:3: model needs 'path'"),
        (
            "name: s\nclasses:\n  jetsn: {}\nmodels:\n  - {name: m, path: MODEL}\n",
            r"suite.yaml:3: unknown device class 'jetsn'",
        ),
        (
            "name: s\nmodels:\n  - {name: m, path: MODEL, variants: [onnx:fp16, onnx:fp16]}\n",
            r"suite.yaml:3: variant onnx:fp16 appears twice",
        ),
        (
            "name: s\nmeasure:\n  batch: 0\nmodels:\n  - {name: m, path: MODEL}\n",
            r"suite.yaml:3: measure.batch must be a positive int",
        ),
        ("name: s\nmodels: [\n", r"suite.yaml:\d+: invalid YAML"),
    ],
)
def test_bad_suite_names_file_line_and_expectation(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_suite(write(tmp_path, text))
