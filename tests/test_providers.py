"""Issue 16, controller side: execution providers and their options checked against one table
when the suite and the inventory load, merged suite < class < device, shown in the plan and
sent in the job; a GPU server split into one device per GPU, each its own series.
(The GPU result fields: tests/test_gpu_results.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fleet.artifacts import Artifact
from fleet.artifacts.card import model_card
from fleet.errors import ConfigError
from fleet.inventory import load_inventory
from fleet.job import build_job
from fleet.plan import Case, describe, make_plan
from fleet.records import DeviceContext, tags
from fleet.regressions.series import series_key, series_name
from fleet.results.record import make_record
from fleet.suite import load_suite
from fleet.suite.providers import PROVIDERS
from fleet_agent import protocol
from fleet_agent.runtimes import ORT_PROVIDERS

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "zoo" / "digits_mlp.onnx"
ONNX_MODEL = f"models:\n  - {{name: m, path: {MLP}}}\n"
TFLITE_MODEL = f"models:\n  - {{name: m, path: {MLP}, variants: ['tflite:fp32']}}\n"


def suite_file(tmp_path: Path, head: str, models: str = ONNX_MODEL) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(f"name: s\n{head}{models}")
    return path


def inventory_file(tmp_path: Path, hosts: str) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(f"all:\n  children:\n    gpu:\n      vars: {{fleet_class: gpu}}\n{hosts}")
    return path


def settings_of(tmp_path: Path, head: str, cls: str = "gpu") -> protocol.Settings:
    return load_suite(suite_file(tmp_path, head)).measure_for(cls, "onnxruntime")


def test_friendly_and_runtime_names_become_the_runtimes_own(tmp_path: Path) -> None:
    trt = "measure:\n  provider: tensorrt\n  provider_options: {fp16: true, engine_cache: true,"
    trt += " trt_builder_optimization_level: 3}\n"
    assert settings_of(tmp_path, trt)["provider_options"] == {
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_builder_optimization_level": 3,
    }
    coreml = "measure:\n  provider: coreml\n  provider_options: {compute_units: CPU_AND_NE,"
    coreml += " model_format: mlprogram, static_input_shapes: true}\n"
    assert settings_of(tmp_path, coreml)["provider_options"] == {
        "MLComputeUnits": "CPUAndNeuralEngine",
        "ModelFormat": "MLProgram",
        "RequireStaticInputShapes": "1",  # CoreML reads its flags as "1"/"0"
    }
    cuda = "measure: {provider: cuda, provider_options: {cudnn_conv_algo_search: HEURISTIC}}\n"
    assert settings_of(tmp_path, cuda)["provider_options"] == {
        "cudnn_conv_algo_search": "HEURISTIC"
    }
    # ONNX Runtime's session config entries go to any provider, as written.
    spin = "measure: {provider_options: {session.intra_op.allow_spinning: '0'}}\n"
    assert settings_of(tmp_path, spin)["provider_options"] == {
        "session.intra_op.allow_spinning": "0"
    }
    # Without options, nothing is sent: the runtime's defaults.
    assert settings_of(tmp_path, "measure: {provider: cuda}\n")["provider_options"] == {}


@pytest.mark.parametrize(
    ("head", "models", "message"),
    [
        (
            "measure: {provider: tensorrt, provider_options: {fp61: true}}\n",
            ONNX_MODEL,
            r"^.*suite.yaml:2: unknown option 'fp61' for onnxruntime provider 'tensorrt'; did"
            r" you mean 'fp16'\? \(it takes .*trt_fp16_enable \(fp16\)",
        ),
        (
            "measure: {provider: cuda, provider_options: {cudnn_conv_algo_search: HEURISTICS}}\n",
            ONNX_MODEL,
            r"must be one of EXHAUSTIVE, HEURISTIC, DEFAULT, not 'HEURISTICS'; did you mean"
            r" 'HEURISTIC'\?",
        ),
        (
            "measure: {provider: tensorrt, provider_options: {fp16: 'yes'}}\n",
            ONNX_MODEL,
            r"suite.yaml:2: tensorrt option fp16 must be true or false, not 'yes'",
        ),
        (
            "measure: {provider: tensorrt, provider_options: {builder_optimization_level: 9}}\n",
            ONNX_MODEL,
            r"builder_optimization_level must be a whole number from 0 to 5, not 9",
        ),
        (
            "measure: {provider: cdua}\n",
            ONNX_MODEL,
            r"suite.yaml:2: measure.provider 'cdua' is not known; the onnx variants need an"
            r" ONNX Runtime provider: one of cpu, cuda, .*; did you mean 'cuda'\?",
        ),
        (
            "measure: {provider: cdua, provider_options: {use_tf32: false}}\n",
            ONNX_MODEL,
            r"suite.yaml:2: measure.provider 'cdua' is not known",
        ),
        (
            "measure: {provider_options: {arena_extend_strategy: kSameAsRequested}}\n",
            ONNX_MODEL,
            r"unknown option 'arena_extend_strategy' for onnxruntime provider 'cpu' \(it takes"
            r" no options, and session.\* session config entries\)",
        ),
        (
            "measure: {provider: cuda, provider_options: {device_id: 1}}\n",
            ONNX_MODEL,
            r"provider option 'device_id' is set by the inventory host var fleet_gpu",
        ),
        ("measure: {gpu: 0}\n", ONNX_MODEL, r"measure.gpu must be left to the inventory"),
        ("measure: {provider_options: [fp16]}\n", ONNX_MODEL, r"a mapping of option: value"),
        ("measure: {load_timeout_s: 0}\n", ONNX_MODEL, r"load_timeout_s must be a number above"),
        (
            "measure: {provider: gpu, delegate_path: /lib/gpu.so, provider_options:"
            " {precision_loss: true}}\n",
            TFLITE_MODEL,
            r"unknown option 'precision_loss' for litert provider 'gpu'; did you mean"
            r" 'is_precision_loss_allowed'\?",
        ),
    ],
)
def test_bad_providers_and_options_are_one_line_naming_file_and_line(
    tmp_path: Path, head: str, models: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        load_suite(suite_file(tmp_path, head, models))
    assert "\n" not in str(error.value)


def test_a_class_option_for_the_suites_provider_names_the_class_line(tmp_path: Path) -> None:
    head = "measure: {provider: tensorrt}\nclasses:\n  jetson:\n    measure:\n"
    head += "      provider_options: {fp16: true, int9: true}\n"
    with pytest.raises(ConfigError, match=r"suite.yaml:6: unknown option 'int9'.*'int8'"):
        load_suite(suite_file(tmp_path, head))


def test_litert_delegates_take_their_own_options(tmp_path: Path) -> None:
    gpu = "measure: {provider: gpu, delegate_path: /lib/gpu.so, provider_options: {fp16: true}}\n"
    suite = load_suite(suite_file(tmp_path, gpu, TFLITE_MODEL))
    assert suite.measure_for("pi", "litert")["provider_options"] == {
        "is_precision_loss_allowed": True
    }
    # A delegate of the user's own: its options are its business, passed as written.
    own = "measure: {provider: hexagon, delegate_path: /lib/h.so, provider_options: {x: 1}}\n"
    suite = load_suite(suite_file(tmp_path, own, TFLITE_MODEL))
    assert suite.measure_for("pi", "litert")["provider_options"] == {"x": 1}


def test_device_beats_class_beats_suite(tmp_path: Path) -> None:
    head = """measure:
  provider: tensorrt
  provider_options: {fp16: true, engine_cache: true}
classes:
  gpu: {measure: {provider_options: {fp16: false, max_workspace_size: 1073741824}}}
  jetson: {measure: {provider: cuda, provider_options: {use_tf32: false}}}
"""
    suite = load_suite(suite_file(tmp_path, head))
    # The same provider: the class adds and overrides key by key.
    assert suite.measure_for("gpu", "onnxruntime")["provider_options"] == {
        "trt_fp16_enable": False,
        "trt_engine_cache_enable": True,
        "trt_max_workspace_size": 1073741824,
    }
    # Another provider: the suite's TensorRT options do not follow it.
    jetson = suite.measure_for("jetson", "onnxruntime")
    assert (jetson["provider"], jetson["provider_options"]) == ("cuda", {"use_tf32": False})
    hosts = """      hosts:
        a: {fleet_provider_options: {engine_cache: false}}
        b: {fleet_provider: cuda, fleet_provider_options: {cudnn_conv_algo_search: DEFAULT}}
        c: {fleet_class: jetson, fleet_provider_options: {use_tf32: true}}
"""
    inventory = load_inventory(inventory_file(tmp_path, hosts))
    plan = make_plan(suite, inventory.select(["a", "b", "c"]))
    got = {p.device.name: p.cases[0].settings for p in plan.devices}
    assert got["a"]["provider_options"] == {
        "trt_fp16_enable": False,
        "trt_engine_cache_enable": False,
        "trt_max_workspace_size": 1073741824,
    }
    assert (got["b"]["provider"], got["b"]["provider_options"]) == (
        "cuda",
        {"cudnn_conv_algo_search": "DEFAULT"},
    )
    assert got["c"]["provider_options"] == {"use_tf32": True}


def test_a_hosts_bad_option_names_the_inventory_line_and_host(tmp_path: Path) -> None:
    hosts = "      hosts:\n        a: {fleet_provider: tensorrt}\n"
    hosts += "        b:\n          fleet_provider: tensorrt\n"
    hosts += "          fleet_provider_options: {engine_cahce: true}\n"
    inventory = load_inventory(inventory_file(tmp_path, hosts))
    suite = load_suite(suite_file(tmp_path, ""))
    make_plan(suite, inventory.select(["a"]))
    with pytest.raises(ConfigError) as error:
        make_plan(suite, inventory.select(["b"]))
    assert re.fullmatch(
        r".*inventory.yaml:9: unknown option 'engine_cahce' for onnxruntime provider"
        r" 'tensorrt' of host 'b'; did you mean 'engine_cache'\? \(it takes .*\)",
        str(error.value),
    )
    typo = "      hosts:\n        a: {fleet_provider: cdua}\n"
    inventory = load_inventory(inventory_file(tmp_path, typo))
    with pytest.raises(
        ConfigError, match=r"inventory.yaml:6: fleet_provider 'cdua' of host 'a' is not known"
    ):
        make_plan(suite, inventory.select(["a"]))


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ("        a: {fleet_gpu: -1}\n", r"inventory.yaml:6: fleet_gpu of 'a' must be a GPU index"),
        ("        a: {fleet_gpu: '0'}\n", r"fleet_gpu of 'a' must be a GPU index from 0 to 255"),
        ("        a: {fleet_provider: 'cu da'}\n", r"fleet_provider of 'a' must be a provider"),
        ("        a: {fleet_provider_options: [fp16]}\n", r"fleet_provider_options of 'a' must"),
    ],
)
def test_bad_gpu_variables_are_refused_at_load(tmp_path: Path, hosts: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_inventory(inventory_file(tmp_path, f"      hosts:\n{hosts}"))


def artifact(case: Case) -> Artifact:
    variant = case.model.series_variant(case.variant)
    return Artifact(case.model.path, "0" * 64, variant, model_card(case.model.path), "0" * 64)


def gpu_server(tmp_path: Path, second_gpu: int) -> list[protocol.Settings]:
    """Two devices on one host (one address, two fleet_gpu), as their jobs carry them."""
    hosts = "      hosts:\n        h200-0: {ansible_host: 10.0.0.5, fleet_gpu: 0}\n"
    hosts += f"        h200-1: {{ansible_host: 10.0.0.5, fleet_gpu: {second_gpu}}}\n"
    inventory = load_inventory(inventory_file(tmp_path, hosts))
    suite = load_suite(suite_file(tmp_path, "measure: {provider: cuda}\n"))
    plan = make_plan(suite, inventory.select(["gpu"]))
    jobs = [build_job("r", p, {c.key: artifact(c) for c in p.cases}, {}).job for p in plan.devices]
    return [job["cases"][0]["settings"] for job in jobs]


def test_a_gpu_server_is_one_device_per_gpu(tmp_path: Path) -> None:
    first, second = gpu_server(tmp_path, 1)
    assert (first["gpu"], second["gpu"]) == (0, 1)
    assert first["provider"] == second["provider"] == "cuda"
    assert first["load_timeout_s"] > first["timeout_s"]  # an engine build is not a repetition


def test_two_devices_on_one_gpu_say_so_and_leave_it_to_the_gpus_lock(tmp_path: Path) -> None:
    first, second = gpu_server(tmp_path, 0)
    assert first["gpu"] == second["gpu"] == 0
    hosts = "      hosts:\n        x: {ansible_host: 10.0.0.5, fleet_gpu: 0}\n"
    hosts += "        y: {ansible_host: 10.0.0.5, fleet_gpu: 0}\n"
    hosts += "        z: {ansible_host: 10.0.0.5, fleet_gpu: 1}\n"
    inventory = load_inventory(inventory_file(tmp_path, hosts))
    suite = load_suite(suite_file(tmp_path, "measure: {provider: cuda}\n"))
    lines = describe(make_plan(suite, inventory.select(["gpu"])))
    shared = [line for line in lines if "shares GPU" in line]
    assert shared == [
        "  shares GPU 0 of 10.0.0.5 with y: the agent's lock on that GPU measures one device at"
        " a time",
        "  shares GPU 0 of 10.0.0.5 with x: the agent's lock on that GPU measures one device at"
        " a time",
    ]


def test_the_plan_shows_provider_options_and_gpu(tmp_path: Path) -> None:
    hosts = "      hosts:\n        h: {fleet_gpu: 3, fleet_provider: tensorrt,"
    hosts += " fleet_provider_options: {fp16: true, timing_cache: true}}\n"
    inventory = load_inventory(inventory_file(tmp_path, hosts))
    suite = load_suite(suite_file(tmp_path, ""))
    lines = describe(make_plan(suite, [inventory.devices["h"], inventory.devices["local"]]))
    assert lines[1].split() == [
        "m/onnx:fp32",
        "onnxruntime/tensorrt[trt_fp16_enable=true,trt_timing_cache_enable=true]",
        "gpu=3",
        "threads=1",
        "batch=1",
    ]
    assert lines[3].split() == ["m/onnx:fp32", "onnxruntime/cpu", "threads=1", "batch=1"]


def test_gpu_and_options_are_series_tags_only_where_set(tmp_path: Path) -> None:
    hosts = "      hosts:\n        a: {ansible_host: s, fleet_gpu: 0}\n"
    hosts += (
        "        b: {ansible_host: s, fleet_gpu: 1, fleet_provider_options: {use_tf32: false}}\n"
    )
    inventory = load_inventory(inventory_file(tmp_path, hosts))
    devices = [inventory.devices[n] for n in ("a", "b", "local")]
    plan = make_plan(load_suite(suite_file(tmp_path, "measure: {provider: cuda}\n")), devices)
    a, b, local = (tags(DeviceContext("s", "r", p.device), p.cases[0]) for p in plan.devices)
    assert (a["gpu"], b["gpu"]) == ("0", "1")
    assert "provider_options" not in a and b["provider_options"] == "use_tf32=false"
    # No GPU, no options: the tags (and so the series) it had before these existed.
    assert not {"gpu", "provider_options"} & set(local)
    records = [make_record("result", t, {}) for t in (a, b, {**a, "gpu": "1"})]
    assert len({series_key(r) for r in records}) == 3
    assert series_name(b).endswith("threads=1 [use_tf32=false] on b GPU 1")
    assert series_name(local).endswith(" on local")


def test_the_table_knows_every_provider_the_agent_knows() -> None:
    assert set(ORT_PROVIDERS) <= set(PROVIDERS["onnxruntime"])


def test_docs_list_every_option_of_the_table() -> None:
    doc = (ROOT / "docs" / "gpu.md").read_text()
    names = {n for table in PROVIDERS.values() for opts in table.values() for n in opts}
    aliases = {o.alias for t in PROVIDERS.values() for opts in t.values() for o in opts.values()}
    assert sorted(n for n in names | aliases - {""} if f"`{n}`" not in doc) == []
