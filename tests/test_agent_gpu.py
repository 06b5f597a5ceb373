"""The agent's GPU parts that run without a GPU: provider options handed to onnxruntime,
the engine cache's keys and folders, IO binding (on the CPU device), GPU and Jetson figures
combined over repetitions, the first load's own limit, and the per-GPU lock between agents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
from jobs import make_case, make_job, of, serve, settings

from fleet.agent_build import build_agent
from fleet_agent import aggregate, engine_cache, gpu_lock, iobinding, providers, worker_run
from fleet_agent.engine_cache import EngineCache

ZOO = Path(__file__).resolve().parents[1] / "zoo"
SHA = "ab" * 32
GPU_FIELDS = {
    "compute_latency_ms_p50",
    "engine_build_ms",
    "engine_cache_hit",
    "gpu_memory_peak_mb",
    "gpu_memory_scope",
    "gpu_clock_mhz_min",
    "gpu_throttle_reasons",
    "tegra_gpu_load_mean",
}


def key(**changes):
    parts = {
        "sha256": SHA,
        "runtime": "onnxruntime",
        "version": "1.22.0",
        "provider": "tensorrt",
        "options": {"trt_fp16_enable": True},
        "device": "NVIDIA H200#0",
        "library": "10.3.0",
    }
    parts.update(changes)
    return engine_cache.key(**parts)


def test_engine_cache_key_changes_with_everything_an_engine_depends_on():
    base = key()
    assert key() == base and len(base) == 64
    others = [
        key(sha256="cd" * 32),
        key(version="1.23.0"),
        key(provider="coreml"),
        key(options={"trt_fp16_enable": False}),
        key(options={"trt_fp16_enable": True, "trt_int8_enable": True}),
        key(device="NVIDIA H200#1"),
        key(device="NVIDIA H100 80GB HBM3#0"),
        key(library="10.4.0"),  # a TensorRT upgrade: its engines are not the old ones
    ]
    assert len({base, *others}) == len(others) + 1


def test_tensorrt_version_as_the_module_or_the_library_says_it():
    assert engine_cache.tensorrt_version("10.3.0\n") == "10.3.0"
    assert engine_cache.tensorrt_version("100300\n") == "10.3.0"
    assert engine_cache.tensorrt_version("101401") == "10.14.1"
    assert engine_cache.tensorrt_version("8601") == "8.6.1"  # before TensorRT 9: major * 1000
    assert engine_cache.tensorrt_version("8502") == "8.5.2"
    assert engine_cache.tensorrt_version("") == ""


def test_tensorrt_version_read_from_the_tensorrt_module(tmp_path, monkeypatch):
    package = tmp_path / "tensorrt"
    package.mkdir()
    (package / "__init__.py").write_text('__version__ = "10.3.0"\n')
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert engine_cache.library_version("tensorrt") == "10.3.0"
    assert engine_cache.library_version("coreml") == ""  # CoreML is the OS's: no library


def test_engine_cache_key_leaves_out_where_the_cache_is():
    moved = {"trt_fp16_enable": True, "trt_engine_cache_path": "/x", "trt_engine_cache_enable": 1}
    assert key(options=moved) == key()


def test_engine_cache_turns_tensorrt_s_cache_on_in_its_folder(tmp_path):
    cache = EngineCache(str(tmp_path), key())
    options = cache.options("tensorrt", {"trt_fp16_enable": True}, "1.22.0")
    assert options == {
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": cache.folder,
    }
    timing = cache.options("tensorrt", {"trt_timing_cache_enable": True}, "1.22.0")
    assert timing["trt_timing_cache_path"] == cache.folder
    own = cache.options("tensorrt", {"trt_engine_cache_path": "/data/engines"}, "1.22.0")
    assert own["trt_engine_cache_path"] == "/data/engines"  # the suite's folder is obeyed


def test_engine_cache_hit_only_after_a_worker_built_and_ran(tmp_path):
    first = EngineCache(str(tmp_path), key())
    first.options("tensorrt", {}, "1.22.0")
    first.prepare()
    assert not first.hit
    assert not EngineCache(str(tmp_path), key()).hit  # made but not built: a cut-short build
    first.built()
    again = EngineCache(str(tmp_path), key())
    again.options("tensorrt", {}, "1.22.0")
    assert again.hit
    assert not EngineCache(str(tmp_path), key(device="NVIDIA H200#1")).hit


def test_engine_cache_turned_off_by_the_suite_never_hits(tmp_path):
    cache = EngineCache(str(tmp_path), key())
    assert cache.options("tensorrt", {"trt_engine_cache_enable": False}, "1.22.0") == {
        "trt_engine_cache_enable": False
    }
    cache.prepare()
    cache.built()
    assert not cache.hit
    assert not (Path(cache.folder) / engine_cache.BUILT).exists()


def test_coreml_cache_only_where_onnxruntime_has_the_option(tmp_path):
    cache = EngineCache(str(tmp_path), key(provider="coreml"))
    options = cache.options("coreml", {"MLComputeUnits": "ALL"}, "1.22.1")
    assert options == {"MLComputeUnits": "ALL", "ModelCacheDirectory": cache.folder}
    old = EngineCache(str(tmp_path), key(provider="coreml"))
    assert old.options("coreml", {"MLComputeUnits": "ALL"}, "1.19.2") == {"MLComputeUnits": "ALL"}


def test_provider_chain_takes_the_gpu_and_options_as_onnxruntime_reads_them(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # every GPU: CUDA's 3 is GPU 3
    chain = providers.ort_chain(
        "TensorrtExecutionProvider",
        settings(provider="tensorrt", gpu=3, provider_options={"trt_fp16_enable": True}),
    )
    assert chain == [
        ("TensorrtExecutionProvider", {"trt_fp16_enable": "1", "device_id": "3"}),
        ("CUDAExecutionProvider", {"device_id": "3"}),  # a fallback stays on its GPU
        "CPUExecutionProvider",
    ]
    own = providers.ort_chain(
        "CUDAExecutionProvider", settings(provider="cuda", gpu=3, provider_options={"device_id": 1})
    )
    assert own == [("CUDAExecutionProvider", {"device_id": "1"}), "CPUExecutionProvider"]
    cpu = providers.ort_chain("CPUExecutionProvider", settings(gpu=3))
    assert cpu == [("CPUExecutionProvider", {})]  # the GPU index is not the CPU's business


@pytest.fixture
def gpus():
    """GPU numbers no real run on this host uses; their lock files removed afterwards."""
    numbers = (90001, 90002)
    yield numbers
    for number in numbers:
        Path(gpu_lock.lock_path(number)).unlink(missing_ok=True)


def test_cpu_run_passes_its_options_and_has_no_gpu_fields(tmp_path, gpus):
    asked = {"session.intra_op.allow_spinning": "0", "session.set_denormal_as_zero": "1"}
    case = make_case(
        "cnn",
        ZOO / "digits_cnn.onnx",
        settings=settings(repetitions=2, provider_options=asked, gpu=gpus[0]),
    )
    (result,) = of(serve(tmp_path, [case]), "result")
    fields = result["fields"]
    assert json.loads(fields["provider_options_used"]) == asked  # as the session holds them
    assert result["tags"]["provider"] == "cpu"
    assert not GPU_FIELDS & set(fields), GPU_FIELDS & set(fields)
    assert not (tmp_path / "engine-cache").exists()  # nothing to build on the CPU


def test_a_gpu_that_cuda_visible_devices_hides_is_the_case_s_error(tmp_path, gpus):
    case = make_case(
        "cnn", ZOO / "digits_cnn.onnx", settings=settings(provider="cuda", gpu=gpus[0])
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"}
    events = serve(tmp_path, [case], env=env)
    (error,) = of(events, "case_error")
    assert error["kind"] == "error"
    assert error["message"] == (
        f"fleet_gpu {gpus[0]} is not a GPU CUDA sees: CUDA_VISIBLE_DEVICES=0,1 (nvidia-smi's"
        f" GPU 0, 1); set fleet_gpu to one of those, or add GPU {gpus[0]} to"
        " CUDA_VISIBLE_DEVICES in the device's environment"
    )
    assert events[-1]["event"] == "done"


def test_cpu_run_without_options_records_none(tmp_path):
    case = make_case("cnn", ZOO / "digits_cnn.onnx", settings=settings(repetitions=1))
    (result,) = of(serve(tmp_path, [case]), "result")
    assert "provider_options_used" not in result["fields"]


def test_io_binding_runs_the_model_on_bound_buffers():
    session = ort.InferenceSession(str(ZOO / "digits_cnn.onnx"), providers=["CPUExecutionProvider"])
    feed = {"input": np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)}
    bound = iobinding.Bound(session, feed, "cpu", 0)
    bound.run()
    np.testing.assert_allclose(bound.outputs()[0], session.run(None, feed)[0], rtol=1e-6)


def rep(samples, compute=(), **fields):
    base = {
        "load_ms": 10.0,
        "first_inference_ms": 2.0,
        "warmup_runs": 20.0,
        "warmup_s": 0.1,
        "warmup_stable": True,
        "duration_s": 1.0,
        "cpu_wait_frac": 0.5,  # a GPU run waits on the device: not a busy neighbour
    }
    base.update(fields)
    return {
        "tags": {"runtime": "onnxruntime", "provider": "cuda"},
        "fields": base,
        "samples_ms": list(samples),
        "compute_samples_ms": list(compute),
        "generation": [],
    }


STEADY = [1.0, 1.01, 0.99, 1.02, 0.98] * 70  # 350 a repetition: enough for p99 over two


def test_gpu_repetitions_combine_into_one_result():
    compute = [0.5, 0.51, 0.49, 0.52, 0.48] * 70
    reps = [
        rep(STEADY, compute, engine_build_ms=9000.0, engine_cache_hit=False,
            gpu_clock_mhz_min=1980.0, gpu_clock_mhz_max=1980.0, gpu_temp_max_c=40.0,
            gpu_power_w_mean=300.0, gpu_throttle_reasons="", gpu_memory_peak_mb=900.0),
        rep(STEADY, compute, engine_cache_hit=True, gpu_clock_mhz_min=1965.0,
            gpu_clock_mhz_max=1980.0, gpu_temp_max_c=44.0, gpu_power_w_mean=320.0,
            gpu_throttle_reasons="applications_clocks_setting", gpu_memory_peak_mb=950.0),
    ]  # fmt: skip
    case = make_case("m", ZOO / "digits_cnn.onnx", settings=settings(provider="cuda"))
    fields = aggregate.combine(reps, {"throttled": False}, case)["fields"]
    assert fields["compute_latency_ms_p50"] == 0.5
    assert fields["compute_latency_ms_p99"] == 0.52
    assert fields["latency_ms_p50"] == 1.0  # end to end, apart
    assert fields["engine_build_ms"] == 9000.0 and fields["engine_cache_hit"] is False
    assert fields["gpu_clock_mhz_min"] == 1965.0 and fields["gpu_temp_max_c"] == 44.0
    assert fields["gpu_power_w_mean"] == 310.0 and fields["gpu_memory_peak_mb"] == 950.0
    assert fields["gpu_throttle_reasons"] == "applications_clocks_setting"
    assert fields["valid"], fields["invalid_reasons"]
    assert fields["load_ms"] == 10.0


def test_gpu_slowdown_and_jetson_trip_make_a_result_not_valid():
    reps = [
        rep(STEADY, gpu_throttle_reasons="sw_power_cap"),
        rep(STEADY, gpu_throttle_reasons="hw_thermal_slowdown,sw_power_cap"),
    ]
    case = make_case("m", ZOO / "digits_cnn.onnx", settings=settings(provider="cuda"))
    fields = aggregate.combine(reps, {"throttled": False}, case)["fields"]
    assert not fields["valid"] and fields["throttled"]
    assert fields["gpu_throttle_reasons"] == "sw_power_cap,hw_thermal_slowdown"
    assert (
        "the GPU slowed down for heat or power (sw_power_cap, hw_thermal_slowdown)"
        in (fields["invalid_reasons"])
    )
    jetson = [rep(STEADY, tegra_throttle_sensors="gpu 97.5 °C (trip 97 °C)", tegra_temp_max_c=97.5)]
    fields = aggregate.combine(jetson * 2, {"throttled": False}, case)["fields"]
    assert "tegra_throttle_sensors" not in fields and fields["throttled"]
    assert (
        "the Jetson reached a thermal trip point: gpu 97.5 °C (trip 97 °C)"
        in (fields["invalid_reasons"])
    )


def output(stage, loaded_at=None):
    return SimpleNamespace(stage=stage, loaded_at=loaded_at)


def test_an_engine_build_has_load_timeout_s_and_the_rest_timeout_s(capsys):
    trt = make_case(
        "m", ZOO / "digits_cnn.onnx",
        settings=settings(provider="tensorrt", timeout_s=60.0, load_timeout_s=600.0),
    )  # fmt: skip
    started, notes = time.monotonic() - 120, [0.0]  # two minutes into the first load
    assert worker_run._over(output("load"), trt, 0, started, notes) == ""
    assert "first load (load, may build an engine) for 120 s" in capsys.readouterr().err
    assert worker_run._over(output("load"), trt, 0, time.monotonic() - 601, [0.0]) == (
        "no result after 600 s (load_timeout_s), while in load"
    )
    building = output("measure")  # the first run: TensorRT builds there for dynamic shapes
    assert worker_run._over(building, trt, 0, started, notes) == ""
    measuring = output("measure", loaded_at=time.monotonic() - 61)
    assert worker_run._over(measuring, trt, 0, started, notes) == (
        "no result after 60 s (timeout_s), while in measure"
    )
    cpu = make_case("m", ZOO / "digits_cnn.onnx", settings=settings(timeout_s=60.0))
    assert worker_run._over(output("load"), cpu, 0, started, notes) == (
        "no result after 60 s (timeout_s), while in load"  # no engine: one limit, as before
    )


def start_agent(workdir: Path, gpu: int, seconds: float) -> subprocess.Popen[str]:
    workdir.mkdir()
    case = make_case(
        "cnn",
        ZOO / "digits_cnn.onnx",
        settings=settings(repetitions=1, gpu=gpu, min_seconds=seconds, max_seconds=seconds),
    )
    job = {**make_job(workdir, [case]), "run_id": workdir.name}
    proc = subprocess.Popen(
        [sys.executable, str(build_agent().path), "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(job) + "\n")
    proc.stdin.flush()
    return proc


def events_until(proc: subprocess.Popen[str], kind: str) -> list[dict]:
    assert proc.stdout is not None
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] in (kind, "fatal"):
            break
    return events


def test_two_agents_on_one_gpu_take_turns_and_other_gpus_do_not_wait(tmp_path, gpus):
    first = start_agent(tmp_path / "first", gpus[0], seconds=10.0)
    try:
        assert events_until(first, "case_start")[-1]["event"] == "case_start"
        same = start_agent(tmp_path / "same", gpus[0], seconds=0.2)
        other = start_agent(tmp_path / "other", gpus[1], seconds=0.2)
        busy = events_until(same, "done")[-1]
        assert busy["event"] == "fatal" and busy["reason"] == "busy"
        assert busy["message"].startswith(f"GPU {gpus[0]} busy: held by run first from ")
        assert same.wait(60) == 2
        assert events_until(other, "done")[-1]["event"] == "done"  # while first still runs
        assert first.poll() is None
        assert other.wait(60) == 0
        assert events_until(first, "done")[-1]["event"] == "done"
    finally:
        first.kill()
        first.wait()
    again = start_agent(tmp_path / "again", gpus[0], seconds=0.2)  # the GPU is free now
    assert events_until(again, "done")[-1]["event"] == "done"
    assert again.wait(60) == 0
