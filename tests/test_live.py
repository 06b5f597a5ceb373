"""The live readers (temperature, throttling, vendor tools) and their parsers, on real
samples of the boards' files and fake vendor tools that print them (tests/boards.py)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from boards import FIXTURES, fake_tool, fixture, tools_on_path, vcgencmd  # noqa: F401 - fixture

from fleet_agent import live, live_parse


def test_read_thermal_zones():
    assert live.read_thermal_zones(str(FIXTURES / "thermal_pi5")) == {"cpu-thermal": 48.3}
    # The Orin's switched-off CV sensors read -256 °C and are left out.
    assert live.read_thermal_zones(str(FIXTURES / "thermal_orin_nano")) == {
        "cpu-thermal": 51.968,
        "gpu-thermal": 50.5,
        "soc0-thermal": 49.062,
        "soc1-thermal": 48.625,
        "soc2-thermal": 48.75,
        "tj-thermal": 52.031,
    }


def test_parse_thermal_zones_keeps_hottest_of_a_repeated_type():
    zones = [
        ("acpitz\n", "27800\n"),
        ("acpitz\n", "29800\n"),
        ("x86_pkg_temp\n", "41000\n"),
        ("iwlwifi_1\n", "\n"),  # a sensor that reads empty while its device sleeps
    ]
    assert live_parse.parse_thermal_zones(zones) == {"acpitz": 29.8, "x86_pkg_temp": 41.0}


def test_parse_vcgencmd_temp():
    assert live_parse.parse_vcgencmd_temp(fixture("vcgencmd_measure_temp.txt")) == 48.3
    with pytest.raises(ValueError, match="not a vcgencmd temperature"):
        live_parse.parse_vcgencmd_temp("VCHI initialization failed\n")


def test_parse_vcgencmd_throttled_decodes_bits():
    # 0x50005 = bits 0, 2, 16, 18: under-voltage and throttling, now and since boot.
    assert live_parse.parse_vcgencmd_throttled(fixture("vcgencmd_get_throttled.txt")) == {
        "throttled_bits": "0x50005",
        "under_voltage_now": True,
        "arm_freq_capped_now": False,
        "throttled_now": True,
        "soft_temp_limit_now": False,
        "under_voltage_since_boot": True,
        "arm_freq_capped_since_boot": False,
        "throttled_since_boot": True,
        "soft_temp_limit_since_boot": False,
    }
    healthy = live_parse.parse_vcgencmd_throttled(fixture("vcgencmd_get_throttled_ok.txt"))
    assert healthy.pop("throttled_bits") == "0x0"
    assert not any(healthy.values())
    with pytest.raises(ValueError, match="not a vcgencmd throttled value"):
        live_parse.parse_vcgencmd_throttled('error=1 error_msg="Command not registered"\n')


def test_throttled_now_reads_only_the_current_bits(tools):
    vcgencmd(tools, "vcgencmd_get_throttled_ok.txt")
    assert live.throttled_now() is False
    (tools / "since_boot.txt").write_text("throttled=0x50000\n")
    vcgencmd(tools, tools / "since_boot.txt")
    assert live.throttled_now() is False
    (tools / "capped.txt").write_text("throttled=0x2\n")
    vcgencmd(tools, tools / "capped.txt")
    assert live.throttled_now() is True


def test_temperature_falls_back_to_vcgencmd(tools, monkeypatch, tmp_path):
    vcgencmd(tools)
    monkeypatch.setattr(live, "_THERMAL_ROOT", str(tmp_path))
    assert live.temperature_c() == 48.3


def test_tegrastats_that_prints_nothing_is_cut_off(tools):
    fake_tool(tools, "tegrastats", "sleep 30\n")
    start = time.monotonic()
    assert live.read_tegrastats_line(timeout=0.5) == ""
    assert time.monotonic() - start < 20  # the fake tool sleeps 30 s: it was not waited for


def test_a_tool_is_found_on_path_as_the_shell_finds_it(tools, tmp_path):
    fake_tool(tools, "nvpmodel", "echo 15W\n")
    (tools / "not-executable").write_text("echo no\n")
    (tools / "a-folder").mkdir()
    assert live.find_tool("nvpmodel") == str(tools / "nvpmodel")
    assert live.find_tool(str(tools / "nvpmodel")) == str(tools / "nvpmodel")
    assert live.find_tool("not-executable") is None
    assert live.find_tool("a-folder") is None
    assert live.run_tool(["nvpmodel"]) == "15W\n"


def test_a_missing_or_failing_tool_is_an_oserror(tools):
    with pytest.raises(FileNotFoundError, match="not installed"):
        live.run_tool(["surely-no-such-vendor-tool", "-q"])
    with pytest.raises(FileNotFoundError):
        live.read_tegrastats_line()
    fake_tool(tools, "nvidia-smi", "echo failed >&2\nexit 9\n")
    with pytest.raises(OSError, match="nvidia-smi"):
        live.run_tool(["nvidia-smi"])


def test_reading_a_device_without_sensors_or_tools_starts_no_process(tmp_path):
    """A plain PC or a lab device: no thermal zone, no vcgencmd. The readers find that out
    from the file system alone: subprocess, the only way they start a tool, is never imported
    (nor are typing and re: the pre-flight check loads these modules, check.py)."""
    script = (
        "import sys\n"
        "from fleet_agent import live\n"
        f"live._THERMAL_ROOT = {str(tmp_path)!r}\n"
        "assert live.temperature_c() is None and live.throttled_now() is None\n"
        "print(sorted(m for m in ('subprocess', 'typing', 're') if m in sys.modules))\n"
    )
    agents = Path(live.__file__).parents[1]
    env = {**os.environ, "PATH": str(tmp_path), "PYTHONPATH": str(agents)}
    # -S: no site, which on some machines imports typing and re for its .pth files
    done = subprocess.run(
        [sys.executable, "-S", "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout == "[]\n"
