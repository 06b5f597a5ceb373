import json
import os
import platform
import re
import time

import pytest
from boards import FIXTURES, fake_tool, fixture, tools_on_path, vcgencmd  # noqa: F401 - fixture

from fleet_agent import distributions, facts_parse, live, probes, sysinfo

DECLARED = {key for keys, _ in probes.PROBES for key in keys}


# ---------------------------------------------------------------- parsers on real samples


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "cpuinfo_pi5.txt",
            {
                "cpu_model": "ARM Cortex-A76",
                "cpu_cores": 4.0,
                "board_model": "Raspberry Pi 5 Model B Rev 1.0",
            },
        ),
        (
            "cpuinfo_pi3_armv7.txt",
            {
                "cpu_model": "ARM Cortex-A53",
                "cpu_cores": 4.0,
                "board_model": "Raspberry Pi 3 Model B Rev 1.2",
            },
        ),
        ("cpuinfo_orin_nano.txt", {"cpu_model": "ARM Cortex-A78AE", "cpu_cores": 6.0}),
        ("cpuinfo_rk3588.txt", {"cpu_model": "ARM Cortex-A55 + Cortex-A76", "cpu_cores": 8.0}),
        # Captured on the H200 device machine (a 16-vCPU VM).
        (
            "cpuinfo_x86_xeon_h200_host.txt",
            {"cpu_model": "Intel(R) Xeon(R) Processor", "cpu_cores": 16.0, "cpu_freq_mhz": 2100.0},
        ),
        (
            "cpuinfo_x86_epyc_vm.txt",
            {"cpu_model": "AMD EPYC", "cpu_cores": 2.0, "cpu_freq_mhz": 2596.134},
        ),
    ],
)
def test_parse_cpuinfo(name, expected):
    assert facts_parse.parse_cpuinfo(fixture(name)) == expected


def test_parse_cpuinfo_unknown_arm_core_falls_back_to_hardware_line():
    text = (
        "processor\t: 0\nCPU implementer\t: 0x51\nCPU part\t: 0x801\n\n"
        "Hardware\t: Qualcomm SDM845\n"
    )
    assert facts_parse.parse_cpuinfo(text)["cpu_model"] == "Qualcomm SDM845"


def test_parse_cpuinfo_of_nothing():
    assert facts_parse.parse_cpuinfo("") == {"cpu_model": "unavailable", "cpu_cores": "unavailable"}


def test_parse_meminfo():
    assert facts_parse.parse_meminfo(fixture("meminfo_pi5.txt")) == {
        "ram_total_mb": 8245968 / 1024,
        "ram_available_mb": 7512880 / 1024,
    }


def test_parse_os_release():
    assert facts_parse.parse_os_release(fixture("os_release_bookworm.txt")) == {
        "os_name": "Debian GNU/Linux 12 (bookworm)"
    }
    assert facts_parse.parse_os_release("ID=alpine\n") == {}


def test_parse_device_tree_model_strips_the_nul():
    text = (FIXTURES / "device_tree_model_pi5").read_bytes().decode()
    assert text.endswith("\x00")
    assert facts_parse.parse_device_tree_model(text) == {
        "board_model": "Raspberry Pi 5 Model B Rev 1.0"
    }
    assert facts_parse.parse_device_tree_model("\x00") == {}


@pytest.mark.parametrize(
    ("name", "release", "jetpack"),
    [
        ("nv_tegra_release_orin_r36.3", "36.3.0", "6.0"),
        ("nv_tegra_release_nano_r32.7.1", "32.7.1", "4.6.1"),
    ],
)
def test_parse_nv_tegra_release(name, release, jetpack):
    assert facts_parse.parse_nv_tegra_release(fixture(name)) == {
        "l4t_release": release,
        "jetpack": jetpack,
    }


def test_parse_nv_tegra_release_unknown_jetpack_and_garbage():
    text = "# R36 (release), REVISION: 9.9, GCID: 1, BOARD: generic, EABI: aarch64, DATE: x\n"
    assert facts_parse.parse_nv_tegra_release(text) == {
        "l4t_release": "36.9.9",
        "jetpack": "unavailable",
    }
    assert facts_parse.parse_nv_tegra_release("hello\n") == {}


def test_parse_nvidia_smi_gpus():
    assert facts_parse.parse_nvidia_smi_gpus(fixture("nvidia_smi_gpus_h100.txt")) == {
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "gpu_count": 1.0,
        "gpu_driver": "550.54.15",
        "gpu_memory_total_mb": 81559.0,
    }
    # Captured from nvidia-smi 580 on an H200.
    assert facts_parse.parse_nvidia_smi_gpus(fixture("nvidia_smi_gpus_h200.txt")) == {
        "gpu_name": "NVIDIA H200",
        "gpu_count": 1.0,
        "gpu_driver": "580.159.04",
        "gpu_memory_total_mb": 143771.0,
    }
    assert facts_parse.parse_nvidia_smi_gpus(fixture("nvidia_smi_gpus_mixed.txt")) == {
        "gpu_name": "NVIDIA GeForce RTX 4090 + NVIDIA GeForce RTX 3090",
        "gpu_count": 2.0,
        "gpu_driver": "550.107.02",
        "gpu_memory_total_mb": 24564.0 + 24576.0,
    }
    # Jetson's integrated GPU shares RAM: nvidia-smi has no total for it.
    assert facts_parse.parse_nvidia_smi_gpus(fixture("nvidia_smi_gpus_orin.txt")) == {
        "gpu_name": "Orin (nvgpu)",
        "gpu_count": 1.0,
        "gpu_driver": "540.3.0",
    }
    assert facts_parse.parse_nvidia_smi_gpus("No devices were found\n") == {}


def test_read_cpufreq_of_a_pi5():
    assert probes.read_cpufreq(str(FIXTURES / "cpufreq_pi5")) == {
        "cpu_governor": "ondemand",
        "cpu_freq_mhz": 1500.0,
        "cpu_freq_max_mhz": 2400.0,
    }


def test_read_cpufreq_prefers_hardware_max_over_policy_cap():
    files = {"scaling_max_freq": "1800000\n", "cpuinfo_max_freq": "2400000\n"}
    assert facts_parse.parse_cpufreq(files) == {"cpu_freq_max_mhz": 2400.0}
    assert facts_parse.parse_cpufreq({"scaling_max_freq": "1800000\n"}) == {
        "cpu_freq_max_mhz": 1800.0
    }


def test_parse_nvpmodel():
    assert facts_parse.parse_nvpmodel(fixture("nvpmodel_q_orin_nano.txt")) == {
        "power_mode": "15W",
        "power_mode_id": 0.0,
    }
    assert facts_parse.parse_nvpmodel(fixture("nvpmodel_q_orin_agx_warn.txt")) == {
        "power_mode": "MAXN",
        "power_mode_id": 0.0,
    }
    assert facts_parse.parse_nvpmodel("") == {}


def test_parse_tegrastats_jetpack6():
    assert facts_parse.parse_tegrastats(fixture("tegrastats_orin_nano_jp6.txt")) == {
        "ram_used_mb": 2311.0,
        "ram_total_mb": 7620.0,
        "swap_used_mb": 0.0,
        "swap_total_mb": 3810.0,
        "cpu_cores_online": 4.0,  # two cores "off" in this power mode
        "cpu_load_pct": (31 + 12 + 8 + 9) / 4,
        "cpu_freq_mhz": 1510.0,
        "emc_load_pct": 4.0,
        "gpu_load_pct": 62.0,
        "gpu_freq_mhz": 624.0,
        "temp_cpu_c": 51.968,
        "temp_soc2_c": 48.75,
        "temp_soc0_c": 49.062,
        "temp_gpu_c": 50.5,
        "temp_tj_c": 52.031,
        "temp_soc1_c": 48.625,
        "power_vdd_in_mw": 7380.0,
        "power_vdd_cpu_gpu_cv_mw": 2482.0,
        "power_vdd_soc_mw": 1905.0,
    }


def test_parse_tegrastats_jetpack4():
    assert facts_parse.parse_tegrastats(fixture("tegrastats_nano_jp4.txt")) == {
        "ram_used_mb": 1628.0,
        "ram_total_mb": 3964.0,
        "swap_used_mb": 0.0,
        "swap_total_mb": 1982.0,
        "cpu_cores_online": 4.0,
        "cpu_load_pct": (5 + 3 + 2 + 1) / 4,
        "cpu_freq_mhz": 1428.0,
        "emc_load_pct": 1.0,
        "gpu_load_pct": 0.0,
        "gpu_freq_mhz": 76.0,
        "temp_pll_c": 33.5,
        "temp_cpu_c": 36.0,
        "temp_pmic_c": 50.0,
        "temp_gpu_c": 35.0,
        "temp_ao_c": 42.0,
        "temp_thermal_c": 35.75,
        "power_pom_5v_in_mw": 2150.0,
        "power_pom_5v_gpu_mw": 0.0,
        "power_pom_5v_cpu_mw": 429.0,
    }


# ---------------------------------------------------------------- the table of runtime packages


def test_the_table_has_every_litert_package_named_as_pip_names_it():
    # runtimes.py imports LiteRT from these packages; the hello event reports them from the table.
    packages = {name.split(".")[0] for name in distributions.TFLITE_INTERPRETERS}
    assert packages <= set(distributions.DISTRIBUTIONS)
    # The Ansible role's venv check finds a requirement's module by its normalized name.
    for names in distributions.DISTRIBUTIONS.values():
        assert all(name == re.sub(r"[-_.]+", "-", name).lower() for name in names)


# ---------------------------------------------------------------- collect, live and simulated


def assert_well_formed(facts):
    assert set(facts) >= DECLARED
    for key, value in facts.items():
        assert isinstance(key, str)
        assert type(value) in (str, float, bool), (key, value)
    json.dumps(facts)


def assert_has(facts, expected):
    assert {key: facts[key] for key in expected} == expected


def test_collect_live_on_this_machine():
    facts = sysinfo.collect()
    assert_well_formed(facts)
    assert facts["os"] == platform.system().lower()
    assert facts["arch"] == platform.machine()
    assert facts["python"] == platform.python_version()
    assert facts["kernel"] == platform.release()
    with open("/proc/cpuinfo") as f:
        assert facts["cpu_model"] == facts_parse.parse_cpuinfo(f.read())["cpu_model"]
    assert facts["cpu_cores"] == float(os.cpu_count())
    assert facts["ram_total_mb"] > 100


def point_at(monkeypatch, **paths):
    """Point the probes, and the live readers' thermal zones, at fixture files (a name in
    fixtures/sysinfo, or a path)."""
    for name, path in paths.items():
        where = live if name == "_THERMAL_ROOT" else probes
        monkeypatch.setattr(where, name, str(FIXTURES / path))


def test_collect_on_a_simulated_raspberry_pi5(tools, monkeypatch, tmp_path):
    vcgencmd(tools)
    point_at(
        monkeypatch,
        _CPUINFO="cpuinfo_pi5.txt",
        _MEMINFO="meminfo_pi5.txt",
        _OS_RELEASE="os_release_bookworm.txt",
        _DT_MODEL="device_tree_model_pi5",
        _TEGRA_RELEASE=tmp_path / "absent",
        _CPUFREQ_DIR="cpufreq_pi5",
        _THERMAL_ROOT="thermal_pi5",
    )
    facts = sysinfo.collect()
    assert_well_formed(facts)
    assert_has(
        facts,
        {
            "cpu_model": "ARM Cortex-A76",
            "cpu_cores": 4.0,
            "board_model": "Raspberry Pi 5 Model B Rev 1.0",
            "ram_total_mb": 8245968 / 1024,
            "os_name": "Debian GNU/Linux 12 (bookworm)",
            "cpu_governor": "ondemand",
            "cpu_freq_max_mhz": 2400.0,
            "temp_c": 48.3,
            "temp_cpu_thermal_c": 48.3,
            "pi_temp_c": 48.3,
            "throttled_bits": "0x50005",
            "under_voltage_since_boot": True,
            "l4t_release": "unavailable",
            "power_mode": "unavailable",
        },
    )
    assert live.throttled_now() is True
    assert live.temperature_c() == 48.3


def test_collect_on_a_simulated_jetson_orin_nano(tools, monkeypatch, tmp_path):
    fake_tool(
        tools,
        "nvpmodel",
        '[ "$1" = "-q" ] || exit 2\ncat "{}"\n'.format(FIXTURES / "nvpmodel_q_orin_nano.txt"),
    )
    # Like the real tool, it prints a line per interval until it is killed.
    fake_tool(
        tools,
        "tegrastats",
        'while true; do cat "{}"; sleep 0.1; done\n'.format(
            FIXTURES / "tegrastats_orin_nano_jp6.txt"
        ),
    )
    fake_tool(tools, "nvidia-smi", 'cat "{}"\n'.format(FIXTURES / "nvidia_smi_gpus_orin.txt"))
    point_at(
        monkeypatch,
        _CPUINFO="cpuinfo_orin_nano.txt",
        _DT_MODEL="device_tree_model_orin_nano",
        _TEGRA_RELEASE="nv_tegra_release_orin_r36.3",
        _THERMAL_ROOT="thermal_orin_nano",
    )
    # Were tegrastats waited for to the timeout, collect() would take a minute, not seconds.
    monkeypatch.setattr(live, "_COMMAND_TIMEOUT_S", 60.0)
    start = time.monotonic()
    facts = sysinfo.collect()
    assert time.monotonic() - start < 30  # one tegrastats line, not a wait for the timeout
    assert_well_formed(facts)
    assert_has(
        facts,
        {
            "cpu_model": "ARM Cortex-A78AE",
            "board_model": "NVIDIA Jetson Orin Nano Developer Kit",
            "l4t_release": "36.3.0",
            "jetpack": "6.0",
            "gpu_name": "Orin (nvgpu)",
            "gpu_memory_total_mb": "unavailable",
            "power_mode": "15W",
            "power_mode_id": 0.0,
            "temp_c": 52.031,
            "tegrastats_gpu_load_pct": 62.0,
            "tegrastats_ram_used_mb": 2311.0,
            "throttled_bits": "unavailable",
        },
    )
    assert live.throttled_now() is None
    assert live.temperature_c() == 52.031


def test_collect_survives_broken_probes(tools, monkeypatch, tmp_path):
    fake_tool(tools, "vcgencmd", 'echo "VCHI initialization failed"\n')
    fake_tool(tools, "nvidia-smi", 'echo "NVIDIA-SMI has failed"\nexit 9\n')
    fake_tool(tools, "tegrastats", "sleep 30\n")  # hangs without a line
    garbage = tmp_path / "garbage"
    garbage.write_text("MemTotal: lots\n\x00\x01")
    point_at(
        monkeypatch,
        _CPUINFO=tmp_path,  # a directory: open() fails
        _MEMINFO=garbage,
        _OS_RELEASE=garbage,
        _DT_MODEL=tmp_path / "absent",
        _DMI_DIR=tmp_path / "absent",
        _TEGRA_RELEASE=garbage,
        _CPUFREQ_DIR=tmp_path,
        _THERMAL_ROOT=tmp_path / "absent",
    )
    monkeypatch.setattr(live, "_COMMAND_TIMEOUT_S", 1.0)
    facts = sysinfo.collect()
    assert_well_formed(facts)
    for key in DECLARED - {"os", "kernel", "arch", "python"}:
        assert facts[key] == "unavailable", key
    assert facts["os"] == platform.system().lower()  # a failed os-release costs only os_name
    assert live.temperature_c() is None
    assert live.throttled_now() is None
