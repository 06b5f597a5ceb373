"""The agent on lab devices (real sshd, real runtimes), driven by `fleet run`: every result field
for ONNX Runtime and LiteRT cases, a decoder's generation records, the older-board stack
(tflite_runtime, numpy<2, no ONNX Runtime), and a busy neighbour that makes a run invalid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from fields import AGENT_RESULT_FIELDS

from fleet import lab as lab_lib
from fleet.cli import main
from fleet.results.store import Store

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo"

pytestmark = pytest.mark.slow

# max_seconds is only a cap, far above what any case needs even on a busy machine, so that
# every case reaches the samples p99 needs (662 over the two repetitions).
QUICK = {"warmup_iterations": 10, "min_iterations": 150, "max_seconds": 60, "repetitions": 2}
P99 = 662  # fleet_agent.stats.min_samples_for(99)


@pytest.fixture(scope="session")
def old_board_python() -> str:
    """The older-board stack (tflite-runtime, numpy<2, no onnxruntime), built once."""
    out = subprocess.run(
        [str(ROOT / "scripts" / "old-board-venv")], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def python_version(python: str) -> str:
    code = "import platform; print(platform.python_version())"
    return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip()


def write_suite(folder: Path, models: list[dict[str, object]], **measure: object) -> Path:
    path = folder / "suite.yaml"
    suite = {"name": "agent-lab", "measure": {**QUICK, **measure}, "models": models}
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def run(suite: Path, lab: Path, store: Path, devices: str = "lab") -> tuple[int, str]:
    args = ["run", str(suite), "--inventory", str(lab / "inventory.yaml"), "--devices", devices]
    result = CliRunner().invoke(main, [*args, "--store", str(store)])
    return result.exit_code, result.output


CNN = {
    "name": "digits_cnn",
    "path": str(ZOO / "digits_cnn.onnx"),
    "dataset": str(ZOO / "digits_cnn_test.npz"),
    "calibration": str(ZOO / "digits_cnn_calib.npz"),
    "variants": ["onnx:fp32", "onnx:fp16", "onnx:int8", "tflite:fp32", "tflite:int8"],
}
GPT = {
    "name": "tiny_gpt",
    "path": str(ZOO / "tiny_gpt.onnx"),
    "dataset": str(ZOO / "tiny_gpt_prompts.npz"),
    "architecture": "decoder",
    "variants": ["onnx:fp32"],
}

# What the agent measures, plus what the controller adds to every stored result.
FIELDS = AGENT_RESULT_FIELDS | {
    "model_size_mb",
    "params",
    "passed",
    "status",
    "run_id",
    "model_sha256",
    "agent_version",
}
AGAINST_REFERENCE = {
    "accuracy_drop_pp",
    "agreement_top1",
    "cosine_min",
    "cosine_mean",
    "max_abs_error",
}


def test_every_field_for_onnx_runtime_and_litert_and_the_older_board(tmp_path, old_board_python):
    folder = tmp_path / "lab"
    devices = lab_lib.up(folder, 2, pythons=[sys.executable, old_board_python])
    try:
        suite = write_suite(tmp_path, [CNN, GPT], context_tokens=[32, 128], decode_tokens=8)
        code, output = run(suite, folder, tmp_path / "r.sqlite")
    finally:
        lab_lib.down(folder)
    assert code == 0, output
    store = Store(tmp_path / "r.sqlite")
    results = {
        (r.tags["device"], r.tags["model"], r.tags["format"], r.tags["precision"]): r
        for r in store.records(measurement="result")
    }

    # lab1: the main stack. Every variant ran, each with every field.
    for (device, model, fmt, precision), record in results.items():
        if device != "lab1":
            continue
        fields = record.fields
        missing = FIELDS - set(fields)
        if (model, fmt, precision) != ("digits_cnn", "onnx", "fp32") and model != "tiny_gpt":
            missing |= AGAINST_REFERENCE - set(fields)
        assert not missing, (model, fmt, precision, missing)
        assert fields["status"] == "ok" and fields["iterations"] >= P99
        assert record.tags["runtime"] == ("litert" if fmt == "tflite" else "onnxruntime")
        assert record.tags["provider"] == ("xnnpack" if fmt == "tflite" else "cpu")
        if model == "digits_cnn":
            assert fields["accuracy_top1"] > 0.95 and abs(fields.get("accuracy_drop_pp", 0)) < 3
    litert = results[("lab1", "digits_cnn", "tflite", "int8")].fields
    assert litert["runtime_package"] == "ai_edge_litert"
    assert litert["agreement_top1"] > 0.95

    # The decoder: one generation record per context length, tagged with it.
    generation = [r for r in store.records(measurement="generation") if r.tags["device"] == "lab1"]
    assert sorted(r.tags["context_tokens"] for r in generation) == ["128", "32"]
    for record in generation:
        assert record.tags["model"] == "tiny_gpt" and record.tags["runtime"] == "onnxruntime"
        f = record.fields
        # context_tokens is the tag only: a field of the same name would clash in InfluxDB.
        assert {"ttft_ms", "decode_tokens_per_s", "prefill_tokens_per_s", "decode_tokens"} <= set(f)
        assert f["ttft_ms"] > 0 and f["decode_tokens_per_s"] > 0
        ttft_s = f["ttft_ms"] / 1e3
        context = int(record.tags["context_tokens"])
        assert f["prefill_tokens_per_s"] == pytest.approx(context / ttft_s)

    # lab2: the older board. TFLite through tflite_runtime; ONNX cases skipped with the reason.
    old = {k[1:]: r for k, r in results.items() if k[0] == "lab2"}
    for key in [("digits_cnn", "tflite", "fp32"), ("digits_cnn", "tflite", "int8")]:
        fields = old[key].fields
        assert fields["status"] == "ok" and fields["runtime_package"] == "tflite_runtime"
        assert fields["runtime_version"] == "2.14.0" and fields["numpy_version"].startswith("1.")
        assert not (FIELDS - set(fields))
        assert fields["accuracy_top1"] > 0.95
        assert "agreement_top1" not in fields  # the FP32 ONNX reference could not run there
    for key in [("digits_cnn", "onnx", "fp32"), ("tiny_gpt", "onnx", "fp32")]:
        assert old[key].fields["status"] == "skipped"
        assert old[key].fields["message"].startswith("onnxruntime is not installed")

    # The device facts reach the "device" record, the lab's memory cap among them.
    facts = {r.tags["device"]: r.fields for r in store.records(measurement="device")}
    for device in devices:
        if device.memory_mb is not None:
            assert facts[device.name]["memory_limit_mb"] == float(device.memory_mb)
        assert facts[device.name]["cpu_cores"] >= 1 and facts[device.name]["ram_total_mb"] > 0
    # The older board's agent ran on the venv's Python (3.8 where one is installed).
    assert facts["lab2"]["python"] == old[("digits_cnn", "tflite", "fp32")].fields["python_version"]
    assert facts["lab2"]["python"] == python_version(old_board_python)


def busy_neighbours(core: str, count: int = 3) -> list[subprocess.Popen[bytes]]:
    """CPU hogs pinned on the lab device's core, outside its cgroup, each in its loop when
    this returns. Three take at least three quarters of the core from a one-thread worker
    (half from one with two busy threads); other work on that core only takes more."""
    code = "import sys; print(flush=True); sys.stdout.close()\nwhile True: pass"
    hogs = [
        subprocess.Popen(
            ["taskset", "-c", core, sys.executable, "-c", code], stdout=subprocess.PIPE
        )
        for _ in range(count)
    ]
    for hog in hogs:
        assert hog.stdout is not None
        hog.stdout.readline()
    return hogs


def test_a_busy_neighbour_on_the_same_core_makes_the_run_invalid(tmp_path):
    # The CPU-wait measure itself is tested in tests/test_measure.py. Here: the neighbours
    # make the case invalid, with the reason, whatever else this machine runs (other work on
    # the device's core adds to the wait, it cannot take it away).
    folder = tmp_path / "lab"
    (device,) = lab_lib.up(folder, 1)
    mlp = {"name": "digits_mlp", "path": str(ZOO / "digits_mlp.onnx"), "variants": ["onnx:fp32"]}
    suite = write_suite(tmp_path, [mlp], min_seconds=0.5)
    hogs = busy_neighbours(device.cpus)
    try:
        code, output = run(suite, folder, tmp_path / "noisy.sqlite")
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        lab_lib.down(folder)
    assert code == 0, output  # not valid is a finding about the numbers, not a failure
    (noisy,) = Store(tmp_path / "noisy.sqlite").records(measurement="result")
    assert noisy.fields["valid"] is False
    reasons = noisy.fields["invalid_reasons"]
    assert "the worker waited" in reasons and "of the timed phase for a CPU" in reasons
    # About 0.75 with three hogs; the limit that makes a run invalid is 0.1.
    assert noisy.fields["cpu_wait_frac"] > 0.3
    assert "(noisy)" in output  # the results table says so too
