"""The agent as the controller runs it (`python agent.pyz serve`, a job on stdin, JSON Lines
out), here on this machine: repetitions, the events, every result field, failures that end
one case and let the next run, throttling seen by a Raspberry Pi's vcgencmd."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from fields import AGENT_RESULT_FIELDS
from jobs import make_case, make_job, of, serve, settings

from fleet.agent_build import build_agent
from fleet.artifacts import Variant, convert
from fleet_agent import protocol

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo"
FIXTURES = ROOT / "tests" / "fixtures" / "sysinfo"


def test_repetitions_make_one_result_with_every_field(tmp_path):
    case = make_case(
        "cnn",
        ZOO / "digits_cnn.onnx",
        dataset=str(ZOO / "digits_cnn_test.npz"),
        inputs=[{"name": "input", "dtype": "float32", "shape": ["batch", 1, 8, 8]}],
        settings=settings(repetitions=3, batch=4),
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
    assert hello["runtimes"]["onnxruntime"] and hello["protocol"] == protocol.PROTOCOL
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
    quick = settings(context_tokens=[32, 128], decode_tokens=4, generation_runs=2)
    case = make_case("gpt", gpt, task="generate", settings=quick)
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
        make_case(
            "slow",
            ZOO / "digits_mlp.onnx",
            settings=settings(timeout_s=2.0, min_seconds=30.0, max_seconds=60.0),
        ),
        make_case("npu", ZOO / "digits_mlp.onnx", settings=settings(provider="npu")),
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
    # The stage it reached depends on how busy the machine is (importing, or timing).
    assert errors["slow"][0] == "timeout"
    assert errors["slow"][1].startswith("no result after 2 s (timeout_s), while in ")
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


def test_every_event_type_of_a_real_agent_matches_the_protocol(tmp_path):
    """`serve` (in jobs.py) checks each event against its TypedDict: no missing key, no
    unknown one, every value of its declared type. Here every event type occurs."""
    cases = [
        make_case("mlp", ZOO / "digits_mlp.onnx", dataset=str(ZOO / "digits_test.npz")),
        make_case(
            "gpt",
            ZOO / "tiny_gpt.onnx",
            task="generate",
            settings=settings(
                context_tokens=[16], decode_tokens=2, generation_runs=1, repetitions=1
            ),
        ),
        make_case("npu", ZOO / "digits_mlp.onnx", settings=settings(provider="npu")),
        # Long enough for a heartbeat.
        make_case(
            "long",
            ZOO / "digits_mlp.onnx",
            settings=settings(repetitions=1, min_seconds=protocol.HEARTBEAT_S + 1),
        ),
    ]
    seen = {e["event"] for e in serve(tmp_path, cases, heartbeats=True)}
    mismatch = {**make_job(tmp_path, []), "protocol": protocol.PROTOCOL + 1}
    proc = subprocess.run(
        [sys.executable, str(build_agent().path), "serve"],
        input=json.dumps(mismatch) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    _, fatal = [protocol.parse_event(line) for line in proc.stdout.splitlines()]
    assert fatal["event"] == "fatal" and "protocol mismatch" in fatal["message"]
    assert seen | {"fatal"} == set(protocol.EVENT_TYPES)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("not json", "a line that is not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"event": "surprise"}', "an unknown event 'surprise'"),
        ('{"event": "progress", "case": "m"}', "a progress event without repetition, repetitions"),
        ('{"event": "case_error", "case": "m", "kind": "gone", "message": ""}', "unknown kind"),
    ],
)
def test_a_line_that_is_not_an_event_says_what_is_wrong(line, problem):
    with pytest.raises(protocol.ProtocolError, match=problem):
        protocol.parse_event(line)


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


def test_outputs_left_by_an_earlier_run_are_removed_and_this_runs_too(tmp_path):
    left = tmp_path / "outputs" / "20260101T000000Z-dead00"
    left.mkdir(parents=True)
    (left / "mlp.npy").write_bytes(b"left by a run whose agent was killed")
    serve(tmp_path, [make_case("mlp", ZOO / "digits_mlp.onnx")])
    assert not list((tmp_path / "outputs").iterdir())


def test_a_case_never_writes_outside_its_runs_outputs(tmp_path):
    escape = tmp_path.parent / "escaped.npy"
    case = make_case(
        "mlp",
        ZOO / "digits_mlp.onnx",
        dataset=str(ZOO / "digits_test.npz"),
        save_outputs=str(tmp_path / "outputs" / "test" / ".." / ".." / ".." / "escaped.npy"),
    )
    (error,) = of(serve(tmp_path, [case]), "case_error")
    assert error["kind"] == "error" and "refusing to write" in error["message"]
    assert not escape.exists()
