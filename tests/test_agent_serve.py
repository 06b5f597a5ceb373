"""The agent as the controller runs it (`python agent.pyz serve`, a job on stdin, JSON Lines
out), here on this machine: repetitions, the events, every result field, failures that end
one case and let the next run, throttling seen by a Raspberry Pi's vcgencmd."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from fields import AGENT_RESULT_FIELDS

from fleet.agent_build import build_agent
from fleet.artifacts import Variant, convert

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo"
FIXTURES = ROOT / "tests" / "fixtures" / "sysinfo"

QUICK = {"warmup_iterations": 5, "min_iterations": 50, "max_seconds": 5, "repetitions": 2}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_case(case_id: str, artifact: Path, **extra: object) -> dict[str, object]:
    runtime = "litert" if artifact.suffix == ".tflite" else "onnxruntime"
    case: dict[str, object] = {
        "id": case_id,
        "model": case_id,
        "artifact": str(artifact),
        "sha256": sha256(artifact) if artifact.exists() else "0" * 64,
        "format": artifact.suffix[1:],
        "precision": "fp32",
        "runtime": runtime,
        "provider": "cpu",
        "threads": 1,
        "batch": 1,
        "dataset": None,
        "reference": None,
        "settings": dict(QUICK),
        "timeout_s": 60,
    }
    case.update(extra)
    return case


def serve(
    tmp_path: Path,
    cases: list[dict[str, object]],
    python: str = sys.executable,
    env=None,
    code: int = 0,
) -> list[dict[str, object]]:
    job = {"protocol": 1, "run_id": "test", "workdir": str(tmp_path), "cases": cases}
    proc = subprocess.run(
        [python, str(build_agent().path), "serve"],
        input=json.dumps(job) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == code, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def of(events, kind):
    return [e for e in events if e["event"] == kind]


def test_repetitions_make_one_result_with_every_field(tmp_path):
    case = make_case(
        "cnn",
        ZOO / "digits_cnn.onnx",
        batch=4,
        dataset=str(ZOO / "digits_cnn_test.npz"),
        inputs=[{"name": "input", "dtype": "float32", "shape": ["batch", 1, 8, 8]}],
        settings={**QUICK, "repetitions": 3},
    )
    events = serve(tmp_path, [case])
    assert [e["event"] for e in events] == [
        "hello",
        "sysinfo",
        "case_start",
        "progress",
        "progress",
        "progress",
        "result",
        "done",
    ]
    hello = events[0]
    assert hello["runtimes"]["onnxruntime"] and hello["protocol"] == 1
    (result,) = of(events, "result")
    fields = result["fields"]
    assert set(fields) >= AGENT_RESULT_FIELDS, AGENT_RESULT_FIELDS - set(fields)
    assert result["tags"] == {"runtime": "onnxruntime", "provider": "cpu"}
    assert fields["repetitions"] == 3 and len(fields["repetition_p50s_ms"].split(",")) == 3
    assert fields["iterations"] >= 662  # enough samples for p99 over the repetitions
    assert (
        fields["latency_ms_min"]
        <= fields["latency_p50_ci95_low_ms"]
        <= fields["latency_ms_p50"]
        <= fields["latency_p50_ci95_high_ms"]
        <= fields["latency_ms_p99"]
        <= fields["latency_ms_max"]
    )
    assert fields["throughput_ips"] == pytest.approx(4000 / fields["latency_ms_mean"])
    assert fields["rss_baseline_mb"] < fields["rss_after_load_mb"] <= fields["peak_rss_mb"]
    assert fields["peak_delta_mb"] == pytest.approx(
        fields["peak_rss_mb"] - fields["rss_baseline_mb"], abs=5
    )
    assert fields["accuracy_top1"] == pytest.approx(0.9833, abs=1e-4)
    assert fields["runtime_package"] == "onnxruntime"
    assert fields["valid"] == (fields["invalid_reasons"] == "")
    assert result["generation"] == []


def test_a_decoder_case_reports_generation_per_context_length(tmp_path):
    gpt = ZOO / "tiny_gpt.onnx"
    settings = {**QUICK, "context_tokens": [32, 128], "decode_tokens": 4, "generation_runs": 2}
    case = make_case("gpt", gpt, task="generate", settings=settings)
    (result,) = of(serve(tmp_path, [case]), "result")
    assert [g["context_tokens"] for g in result["generation"]] == [32.0, 128.0]
    assert all(g["ttft_ms"] > 0 and g["decode_tokens_per_s"] > 0 for g in result["generation"])


def test_failures_end_their_case_and_the_next_one_runs(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07 not a model")
    corrupt = tmp_path / "corrupt.onnx"
    shutil.copyfile(ZOO / "digits_mlp.onnx", corrupt)
    cases = [
        make_case("garbage", garbage),
        {**make_case("corrupt", corrupt), "sha256": "f" * 64},
        make_case("slow", ZOO / "digits_mlp.onnx", timeout_s=2)
        | {"settings": {**QUICK, "min_seconds": 30, "max_seconds": 60}},
        make_case("npu", ZOO / "digits_mlp.onnx", provider="npu"),
        make_case("unknown-runtime", ZOO / "digits_mlp.onnx", runtime="tvm"),
        make_case("fine", ZOO / "digits_mlp.onnx"),
    ]
    events = serve(tmp_path, cases)
    errors = {e["case"]: (e["kind"], e["message"]) for e in of(events, "case_error")}
    assert errors["garbage"][0] == "invalid_model"
    assert errors["corrupt"] == (
        "invalid_model",
        f"{corrupt} does not match its sha256; it will be sent again",
    )
    assert not corrupt.exists()  # a corrupt cached file is never used again
    assert errors["slow"] == ("timeout", "no result after 2 s (timeout_s), while in measure")
    assert errors["npu"][0] == "skipped" and "unknown provider 'npu'" in errors["npu"][1]
    assert errors["unknown-runtime"] == (
        "skipped",
        "unknown runtime 'tvm'; known: onnxruntime, litert",
    )
    assert [r["case"] for r in of(events, "result")] == ["fine"]
    assert events[-1]["event"] == "done"


def fake_tool(directory: Path, name: str, script: str) -> None:
    tool = directory / name
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)


def test_throttling_seen_during_a_case_makes_it_invalid(tmp_path):
    # A Raspberry Pi's vcgencmd that reports throttling now (bits 0x50005).
    tools = tmp_path / "bin"
    tools.mkdir()
    fake_tool(
        tools,
        "vcgencmd",
        'case "$1" in\n'
        f'  measure_temp) cat "{FIXTURES / "vcgencmd_measure_temp.txt"}" ;;\n'
        f'  get_throttled) cat "{FIXTURES / "vcgencmd_get_throttled.txt"}" ;;\n'
        "esac\n",
    )
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}
    (result,) = of(serve(tmp_path, [make_case("mlp", ZOO / "digits_mlp.onnx")], env=env), "result")
    fields = result["fields"]
    assert fields["throttled"] is True and fields["valid"] is False
    assert "the device throttled during the run" in fields["invalid_reasons"]
    assert fields["temp_start_c"] <= fields["temp_max_c"]
    if not Path("/sys/class/thermal/thermal_zone0").exists():
        assert fields["temp_start_c"] == fields["temp_end_c"] == 48.3  # vcgencmd's reading


def test_no_sensor_means_no_temperature_and_throttled_false(tmp_path):
    if Path("/sys/class/thermal/thermal_zone0").exists():
        pytest.skip("this machine has a thermal sensor")
    (result,) = of(serve(tmp_path, [make_case("mlp", ZOO / "digits_mlp.onnx")]), "result")
    assert result["fields"]["throttled"] is False
    assert not {"temp_start_c", "temp_max_c", "temp_end_c"} & set(result["fields"])


def test_a_second_agent_on_the_same_device_is_refused(tmp_path):
    import fcntl

    with open(tmp_path / "agent.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        events = serve(tmp_path, [make_case("mlp", ZOO / "digits_mlp.onnx")], code=2)
    assert events[-1]["event"] == "fatal" and "device busy" in events[-1]["message"]


@pytest.fixture(scope="session")
def old_board_python() -> str:
    """The older-board stack (tflite-runtime, numpy<2, no onnxruntime), built once."""
    out = subprocess.run(
        [str(ROOT / "scripts" / "old-board-venv")], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


@pytest.mark.slow
def test_older_board_stack_runs_tflite_runtime_and_skips_onnx(tmp_path, old_board_python):
    tflite = convert(ZOO / "digits_cnn.onnx", Variant.parse("tflite:fp32")).path
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(tflite.read_bytes()[:20000])
    cases = [
        make_case("tflite", tflite, dataset=str(ZOO / "digits_cnn_test.npz")),
        make_case("onnx", ZOO / "digits_cnn.onnx"),
        make_case("truncated", truncated),
    ]
    events = serve(tmp_path, cases, python=old_board_python)
    assert set(events[0]["runtimes"]) == {"numpy", "tflite_runtime"}
    (result,) = of(events, "result")
    assert result["tags"] == {"runtime": "litert", "provider": "xnnpack"}
    fields = result["fields"]
    assert fields["runtime_package"] == "tflite_runtime" and fields["runtime_version"] == "2.14.0"
    assert fields["numpy_version"].startswith("1.")
    assert fields["accuracy_top1"] > 0.95
    errors = {e["case"]: (e["kind"], e["message"]) for e in of(events, "case_error")}
    assert errors["onnx"][0] == "skipped"
    assert errors["onnx"][1].startswith("onnxruntime is not installed")
    # Where the cut falls decides whether tflite_runtime 2.14 raises or crashes (SIGSEGV);
    # converter builds differ in bytes, so either is right, and both must be invalid_model.
    kind, message = errors["truncated"]
    assert kind == "invalid_model"
    assert message in (
        "the runtime crashed loading the model (SIGSEGV)",
        "No subgraph in the model.",
    )
