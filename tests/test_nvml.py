"""The GPU readings (fleet_agent.gpu_parse, gpu_sampling): nvidia-smi's output parsed from
fixtures (tests/fixtures/gpu, see its README), the nvidia-smi loops run as real processes by
a stand-in that prints those fixtures, and the NVML path on a stand-in for pynvml."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from fleet_agent import gpu_parse, gpu_sampling
from fleet_agent.gpu_parse import GpuSample

FIXTURES = Path(__file__).parent / "fixtures" / "gpu"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_parse_smi_sample_of_an_idle_h200():
    assert gpu_parse.parse_smi_samples(fixture("nvidia_smi_query_gpu_h200_idle.txt")) == {
        0: GpuSample(1980.0, 34.0, 121.45, 0.0, 1.0, 0x1)
    }


def test_parse_smi_samples_of_several_gpus_one_throttled():
    samples = gpu_parse.parse_smi_samples(fixture("nvidia_smi_query_gpu_multi_throttled.txt"))
    assert sorted(samples) == [0, 1, 2, 3]
    assert samples[2] == GpuSample(1095.0, 87.0, 402.55, 100.0, 61210.0, 0x60)
    assert gpu_parse.throttle_names(samples[2].throttle_bits) == [
        "sw_thermal_slowdown",
        "hw_thermal_slowdown",
    ]


def test_parse_smi_sample_of_a_jetson_has_no_figures_where_it_says_na():
    samples = gpu_parse.parse_smi_samples(fixture("nvidia_smi_query_gpu_orin.txt"))
    assert samples == {0: GpuSample(624.0, None, None, 62.0, None, 0)}


def test_parse_smi_samples_ignores_an_error_message():
    assert gpu_parse.parse_smi_samples(fixture("nvidia_smi_query_gpu_unknown_field.txt")) == {}


def test_parse_smi_apps():
    apps = gpu_parse.parse_smi_apps(fixture("nvidia_smi_compute_apps_h200.txt"))
    assert apps == {2817343: 1478.0, 2817401: 81220.0}
    assert gpu_parse.parse_smi_apps(fixture("nvidia_smi_compute_apps_orin.txt")) == {}
    assert gpu_parse.parse_smi_apps("12, 100\n12, 50\n") == {12: 150.0}  # two GPUs


def test_summarise_a_timed_phase():
    samples = [
        gpu_parse.parse_smi_samples(line)[0]
        for line in fixture("nvidia_smi_query_gpu_h200_loop.txt").splitlines()
    ]
    fields = gpu_parse.summarise(samples)
    assert fields == {
        "gpu_clock_mhz_min": 1965.0,
        "gpu_clock_mhz_max": 1980.0,
        "gpu_temp_max_c": 43.0,
        "gpu_power_w_mean": pytest.approx((311.20 + 318.75 + 402.10 + 330.02) / 4),
        "gpu_util_mean": pytest.approx((87 + 91 + 99 + 93) / 4),
        "gpu_throttle_reasons": "sw_power_cap",
    }
    assert gpu_parse.slowdowns(fields["gpu_throttle_reasons"]) == ["sw_power_cap"]


def test_idle_is_not_a_throttle_reason_worth_recording():
    idle = gpu_parse.parse_smi_samples(fixture("nvidia_smi_query_gpu_h200_idle.txt"))[0]
    assert gpu_parse.summarise([idle])["gpu_throttle_reasons"] == ""
    assert gpu_parse.slowdowns("") == []
    assert gpu_parse.slowdowns("applications_clocks_setting,sync_boost") == []
    assert gpu_parse.summarise([]) == {}


def fake_smi(tools: Path, query_gpu: str, apps: str) -> None:
    """An nvidia-smi that answers the queries gpu_sampling makes: a fixture per query, once
    or, with -lms, every interval until killed; the compute apps list its caller (the test
    process) with ``apps`` MiB."""
    script = f"""#!/bin/sh
case "$*" in
  *clocks_event_reasons*) cat "{FIXTURES}/nvidia_smi_query_gpu_unknown_field.txt"; exit 2;;
esac
loop=no
case "$*" in *-lms*) loop=yes; sleep 0.3;; esac  # like the real one, slow to start
while true; do
  case "$*" in
    *--query-compute-apps*) echo "$PPID, {apps}";;
    *--query-gpu=name*) echo "NVIDIA H200";;
    *) cat "{query_gpu}";;
  esac
  [ $loop = yes ] || exit 0
  sleep 0.1
done
"""
    tool = tools / "nvidia-smi"
    tool.write_text(script)
    tool.chmod(0o755)


@pytest.fixture
def tools(tmp_path, monkeypatch):
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # NVML absent: nvidia-smi it is
    return folder


def test_smi_watch_reads_phases_memory_and_throttling(tools):
    fake_smi(tools, str(FIXTURES / "nvidia_smi_query_gpu_multi_throttled.txt"), "1478")
    # Driver before 535: the new field name is refused, the old one answers.
    assert gpu_sampling.smi_fields(2) == gpu_parse.SMI_FIELDS
    assert gpu_sampling.gpu_name(2) == "NVIDIA H200"
    watch = gpu_sampling.start(2)
    assert isinstance(watch, gpu_sampling.SmiWatch)
    for phase in ("load", "warm", "timed", "after"):
        watch.phase(phase)  # each waits for the loop's next line
    watch.stop()
    fields = watch.fields()
    assert fields["gpu_throttle_reasons"] == "sw_thermal_slowdown,hw_thermal_slowdown"
    assert fields["gpu_clock_mhz_min"] == fields["gpu_clock_mhz_max"] == 1095.0
    assert fields["gpu_memory_scope"] == "process"
    assert fields["gpu_memory_peak_mb"] == 1478.0
    assert fields["gpu_memory_delta_mb"] == 1478.0 - fields["gpu_memory_baseline_mb"]


def test_smi_watch_without_the_process_listed_reads_the_whole_gpu(tools):
    fake_smi(tools, str(FIXTURES / "nvidia_smi_query_gpu_h200_idle.txt"), "[N/A]")
    watch = gpu_sampling.start(0)
    assert watch is not None
    for phase in ("load", "warm", "timed"):
        watch.phase(phase)
    watch.stop()
    fields = watch.fields()
    assert fields["gpu_memory_scope"] == "device"
    assert fields["gpu_memory_baseline_mb"] == fields["gpu_memory_peak_mb"] == 1.0


def test_no_watch_without_nvidia_smi_or_a_gpu(tools):
    assert gpu_sampling.start(0) is None  # no nvidia-smi on PATH (nor NVML)
    fake_smi(tools, str(FIXTURES / "nvidia_smi_query_gpu_h200_idle.txt"), "1")
    assert gpu_sampling.start(5) is None  # no GPU 5 on this host


class FakeNvml(types.SimpleNamespace):
    """The nvidia-ml-py calls NvmlWatch makes, answering one GPU's fixed figures; the
    compute processes list ``pid`` once ``loaded`` is set."""

    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def __init__(self, pid: int) -> None:
        super().__init__(pid=pid, loaded=False, shut=False)

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetHandleByIndex(self, index):
        if index != 0:
            raise self.NVMLError("Invalid Argument")
        return "handle0"

    def nvmlDeviceGetClockInfo(self, handle, clock):
        return 1980 if clock == self.NVML_CLOCK_SM else 0

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 52

    def nvmlDeviceGetPowerUsage(self, handle):
        raise self.NVMLError("Not Supported")

    def nvmlDeviceGetUtilizationRates(self, handle):
        return types.SimpleNamespace(gpu=97, memory=40)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return types.SimpleNamespace(used=3 * 2**30, total=141 * 2**30)

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
        return 0x4

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        if not self.loaded:
            return []
        return [types.SimpleNamespace(pid=self.pid, usedGpuMemory=512 * 2**20)]


def test_nvml_watch():
    nvml = FakeNvml(os.getpid())
    watch = gpu_sampling.NvmlWatch(nvml, 0, os.getpid(), interval_s=0.05)
    watch.phase("load")
    nvml.loaded = True
    watch.phase("warm")
    watch.phase("timed")
    watch.phase("after")
    watch.stop()
    assert nvml.shut
    fields = watch.fields()
    assert fields["gpu_clock_mhz_min"] == 1980.0
    assert fields["gpu_temp_max_c"] == 52.0
    assert fields["gpu_util_mean"] == 97.0
    assert "gpu_power_w_mean" not in fields  # NVML: not supported on this GPU
    assert fields["gpu_throttle_reasons"] == "sw_power_cap"
    assert fields["gpu_memory_scope"] == "process"
    assert fields["gpu_memory_baseline_mb"] == 0.0  # no CUDA context before the load
    assert fields["gpu_memory_after_load_mb"] == fields["gpu_memory_peak_mb"] == 512.0


def test_nvml_watch_of_a_gpu_that_is_not_there_fails_at_once():
    nvml = FakeNvml(os.getpid())
    with pytest.raises(nvml.NVMLError):
        gpu_sampling.NvmlWatch(nvml, 3, os.getpid())
