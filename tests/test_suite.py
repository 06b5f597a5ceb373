from __future__ import annotations

from pathlib import Path

import pytest

from fleet.artifacts.variant import Variant
from fleet.errors import ConfigError
from fleet.inventory import load_inventory
from fleet.plan import make_plan
from fleet.suite import GRAPH_LEVELS, check_budgets, load_suite
from fleet_agent.runtimes import _ORT_LEVELS

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
            r"suite.yaml:3: measure.min_iterations must be a whole number from 1 to 10,000,000",
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
            r"suite.yaml:3: measure.batch must be a whole number from 1 to 65,536, not 0",
        ),
        ("name: s\nmodels: [\n", r"suite.yaml:\d+: invalid YAML"),
    ],
)
def test_bad_suite_names_file_line_and_expectation(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_suite(write(tmp_path, text))


# Issue 12, defects 6, 7 and 9: every malformed value is refused when the suite loads, with
# its file and line, the rule it broke, and nothing more than one line.
@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Duplicate keys: the second `budgets:` used to win silently.
        (
            "name: s\nbudgets: {p95_ms: 5}\nmodels:\n  - {name: m, path: MODEL}\n"
            "budgets: {p95_ms: 50}\n",
            r"suite.yaml:5: invalid YAML: key 'budgets' appears twice \(first on line 2\)",
        ),
        # Names that become paths on the device or in the store.
        ("name: ../../tmp/x\nmodels:\n  - {name: m, path: MODEL}\n", r"suite.yaml:1: the suite"),
        (
            "name: s\nmodels:\n  - {name: ../../../../tmp/x, path: MODEL}\n",
            r"suite.yaml:3: a model name must be 1-64 letters, digits.*not '../../../../tmp/x'",
        ),
        ('name: s\nmodels:\n  - {name: "a\'b", path: MODEL}\n', r"suite.yaml:3: a model name"),
        ("name: 'my suite'\nmodels:\n  - {name: m, path: MODEL}\n", r"suite.yaml:1: the suite"),
        # Numbers out of range, of the wrong kind, or not numbers at all.
        ("name: s\nmeasure: {threads: 1.0e+20}\nmodels:\n  - {name: m, path: MODEL}\n", "threads"),
        (
            "name: s\nmeasure: {threads: 100000000000000000000}\nmodels:\n"
            "  - {name: m, path: MODEL}\n",
            r"suite.yaml:2: measure.threads must be a whole number from 1 to 1,024",
        ),
        (
            "name: s\nmeasure:\n  max_seconds: 1.0e+308\nmodels:\n  - {name: m, path: MODEL}\n",
            r"suite.yaml:3: measure.max_seconds must be a number above 0 to 86,400",
        ),
        ("name: s\nmeasure: {max_seconds: .inf}\nmodels:\n  - {name: m, path: MODEL}\n", "inf"),
        ("name: s\nmeasure: {cv_max: .nan}\nmodels:\n  - {name: m, path: MODEL}\n", "nan"),
        ("name: s\nmeasure: {repetitions: true}\nmodels:\n  - {name: m, path: MODEL}\n", "True"),
        ("name: s\nmeasure: {warmup_seconds: -1}\nmodels:\n  - {name: m, path: MODEL}\n", "-1"),
        ("name: s\nmeasure: {max_seconds: 0}\nmodels:\n  - {name: m, path: MODEL}\n", "above 0"),
        ("name: s\nmeasure: {repetitions: 1001}\nmodels:\n  - {name: m, path: MODEL}\n", "1,000"),
        (
            "name: s\nmeasure: {context_tokens: [32, 0]}\nmodels:\n  - {name: m, path: MODEL}\n",
            r"measure.context_tokens must be a list of 1-64 whole numbers",
        ),
        ("name: s\nbudgets: {p95_ms: .nan}\nmodels:\n  - {name: m, path: MODEL}\n", "p95_ms"),
        (
            "name: s\nbudgets: {min_accuracy_top1: 95}\nmodels:\n  - {name: m, path: MODEL}\n",
            r"budget min_accuracy_top1 must be a number from 0 to 1, not 95",
        ),
        # Providers and other words the device would only refuse case by case.
        (
            "name: s\nmeasure: {provider: cpuu}\nmodels:\n  - {name: m, path: MODEL}\n",
            r"suite.yaml:2: measure.provider 'cpuu' is not known; the onnx variants need an"
            r" ONNX Runtime provider: one of cpu, cuda, tensorrt",
        ),
        (
            "name: s\nclasses:\n  pi: {measure: {provider: gpu}}\nmodels:\n"
            "  - {name: m, path: MODEL, variants: ['tflite:fp32']}\n",
            r"suite.yaml:3: measure.provider 'gpu' is not known; the tflite variants need a"
            r" LiteRT provider: one of cpu, xnnpack, builtin, or a delegate",
        ),
        (
            "name: s\nmeasure: {graph_optimization_level: fast}\nmodels:\n"
            "  - {name: m, path: MODEL}\n",
            r"graph_optimization_level must be one of disable, basic, extended, all",
        ),
        # Declared fields go into the model card (and the shared cache): one short line.
        (
            "name: s\nmodels:\n  - {name: m, path: MODEL, family: [a, b]}\n",
            r"suite.yaml:3: family must be one line of text of at most 200 characters",
        ),
        ("name: s\ndescription: [a]\nmodels:\n  - {name: m, path: MODEL}\n", "description"),
    ],
)
def test_malformed_values_are_refused_at_load(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        load_suite(write(tmp_path, text))
    assert "\n" not in str(error.value)


def test_a_delegate_provider_with_its_library_is_accepted(tmp_path: Path) -> None:
    suite = load_suite(
        write(
            tmp_path,
            "name: s\nmeasure: {provider: gpu, delegate_path: /usr/lib/libgpu_delegate.so}\n"
            "models:\n  - {name: m, path: MODEL, variants: ['tflite:fp32']}\n",
        )
    )
    assert suite.measure_for("pi")["provider"] == "gpu"


def test_graph_levels_are_the_agents() -> None:
    assert set(GRAPH_LEVELS) == set(_ORT_LEVELS)


def test_a_model_path_that_is_a_folder_says_so(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    path = write(tmp_path, "name: s\nmodels:\n  - {name: m, path: models}\n")
    with pytest.raises(ConfigError, match=r"suite.yaml:3: path 'models' is a folder, not a file"):
        load_suite(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a zip at all", r"dataset .*bad.npz: not a readable .npz file \(BadZipFile"),
        (b"", r"dataset .*bad.npz: not a readable .npz file"),
    ],
)
def test_a_bad_dataset_is_refused_at_load(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "bad.npz").write_bytes(content)
    path = write(tmp_path, "name: s\nmodels:\n  - {name: m, path: MODEL, dataset: bad.npz}\n")
    with pytest.raises(ConfigError, match=rf"suite.yaml:3: {message}"):
        load_suite(path)


def test_a_yaml_bomb_fails_fast_naming_its_line(tmp_path: Path) -> None:
    """Issue 12, defect 7: 700 bytes that expand to 9**9 values once walked."""
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [{', '.join([f'*{previous}'] * 9)}]")
    text = "\n".join([*lines, "name: s", "models: *i"]) + "\n"
    assert len(text) < 800
    with pytest.raises(ConfigError, match=r"suite.yaml:5: invalid YAML: aliases expand to more"):
        load_suite(write(tmp_path, text))


def test_deep_nesting_is_an_error_not_a_recursion_error(tmp_path: Path) -> None:
    text = "name: s\nmodels:\n  - {name: m, path: MODEL, family: " + "[" * 5000 + "]" * 5000 + "}\n"
    with pytest.raises(ConfigError, match=r"suite.yaml:3: invalid YAML: nested deeper than 64"):
        load_suite(write(tmp_path, text))


def test_shared_settings_through_an_alias_still_work(tmp_path: Path) -> None:
    suite = load_suite(
        write(
            tmp_path,
            "name: s\nmeasure: &m {threads: 2}\nclasses:\n  pi: {measure: *m}\n"
            "models:\n  - {name: m, path: MODEL}\n",
        )
    )
    assert suite.measure_for("pi")["threads"] == 2
