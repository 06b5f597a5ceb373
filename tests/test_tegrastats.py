"""A Jetson while a case runs (fleet_agent.tegrastats) and its one-shot facts (nvpmodel,
jetson_clocks): parsed from fixtures in each JetPack format (tests/fixtures/gpu, see its
README), and the watch run on a stand-in tegrastats that prints them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fleet_agent import facts_parse, gpu_parse, probes, sysinfo, tegrastats

FIXTURES = Path(__file__).parent / "fixtures" / "gpu"


def lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


def test_orin_nano_jetpack6_under_load():
    fields = tegrastats.summarise(lines("tegrastats_orin_nano_jp6_load.txt"), {})
    assert fields == {
        "tegra_gpu_load_mean": pytest.approx((88 + 92 + 90) / 3),
        "tegra_emc_load_mean": pytest.approx((21 + 23 + 22) / 3),
        "tegra_temp_max_c": 61.5,
        "tegra_power_mw_mean": pytest.approx((9620 + 9780 + 9700) / 3),  # VDD_IN, now
        "tegra_throttle_sensors": "",
    }


def test_agx_orin_jetpack5_sums_its_rails_and_skips_disabled_sensors():
    fields = tegrastats.summarise(lines("tegrastats_agx_orin_jp5.txt"), {})
    assert fields["tegra_power_mw_mean"] == 2753 + 393 + 3349 + 503  # no input rail
    assert fields["tegra_temp_max_c"] == 45.625  # CV0@-256C and GPU@-256C are off
    assert fields["tegra_gpu_load_mean"] == 0.0


def test_xavier_nx_jetpack5_leaves_out_the_pmic_and_the_fan_estimate():
    parsed = facts_parse.parse_tegrastats(lines("tegrastats_xavier_nx_jp5.txt")[0])
    assert tegrastats.temperatures(parsed) == {"aux": 31.5, "cpu": 33.0, "ao": 31.5, "gpu": 32.0}
    assert tegrastats.input_power_mw(parsed) == 4115.0


def test_nano_jetpack4_hot_reaches_its_trip_points():
    trips = {"cpu": 97.0, "gpu": 97.0, "pll": 97.0}
    fields = tegrastats.summarise(lines("tegrastats_nano_jp4_hot.txt"), trips)
    assert fields["tegra_power_mw_mean"] == 7214.0  # POM_5V_IN
    assert fields["tegra_temp_max_c"] == 97.5  # PMIC@100C is no sensor
    assert fields["tegra_throttle_sensors"] == "cpu 97.5 °C (trip 97 °C)"
    cool = tegrastats.summarise(lines("tegrastats_orin_nano_jp6_load.txt"), {"gpu": 97.0})
    assert cool["tegra_throttle_sensors"] == ""


def test_no_lines_no_fields():
    assert tegrastats.summarise([], {}) == {}
    assert tegrastats.summarise(["tegrastats: command failed"], {}) == {}


def test_sensor_names_match_across_sysfs_and_tegrastats():
    for name in ("CPU-therm", "cpu-thermal", "CPU", "cpu"):
        assert tegrastats.sensor_name(name) == "cpu"


def write_zone(root: Path, index: int, zone_type: str, trips: list[tuple[str, int]]) -> None:
    zone = root / f"thermal_zone{index}"
    zone.mkdir(parents=True)
    (zone / "type").write_text(zone_type + "\n")
    (zone / "temp").write_text("45000\n")
    for i, (kind, millideg) in enumerate(trips):
        (zone / f"trip_point_{i}_type").write_text(kind + "\n")
        (zone / f"trip_point_{i}_temp").write_text(f"{millideg}\n")


def test_trip_points_from_sysfs(tmp_path):
    write_zone(tmp_path, 0, "CPU-therm", [("critical", 102000), ("passive", 97000)])
    write_zone(tmp_path, 1, "GPU-therm", [("hot", 99500), ("passive", 98000)])
    write_zone(tmp_path, 2, "PMIC-Die", [("critical", 120000)])  # nothing that throttles
    write_zone(tmp_path, 3, "AO-therm", [])
    assert tegrastats.read_trip_points(str(tmp_path)) == {"cpu": 97.0, "gpu": 98.0}
    assert tegrastats.read_trip_points(str(tmp_path / "none")) == {}


@pytest.fixture
def fake_tegrastats(tmp_path, monkeypatch):
    """A tegrastats on PATH that prints the loaded Orin Nano's lines, one each 0.05 s."""
    folder = tmp_path / "bin"
    folder.mkdir()
    tool = folder / "tegrastats"
    tool.write_text(
        "#!/bin/sh\n"
        '[ "$1" = "--interval" ] || exit 2\n'
        f'while true; do while read -r l; do echo "$l"; sleep 0.05; done'
        f' < "{FIXTURES / "tegrastats_orin_nano_jp6_load.txt"}"; done\n'
    )
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    monkeypatch.setattr(tegrastats, "_THERMAL_ROOT", str(tmp_path / "thermal"))
    write_zone(tmp_path / "thermal", 0, "gpu-thermal", [("passive", 60000)])
    return tool


def test_watch_keeps_the_timed_phase_only(fake_tegrastats):
    watch = tegrastats.start()
    assert watch is not None
    watch.phase("timed")
    deadline = time.monotonic() + 30
    while not watch.fields() and time.monotonic() < deadline:
        time.sleep(0.05)
    watch.phase("after")
    watch.stop()
    fields = watch.fields()
    assert 88.0 <= fields["tegra_gpu_load_mean"] <= 92.0
    assert fields["tegra_throttle_sensors"].startswith("gpu ")  # 60.5-61.5 °C, at its 60 °C trip


def test_no_watch_without_tegrastats(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert tegrastats.start() is None


def test_jetson_clocks():
    on = gpu_parse.parse_jetson_clocks(
        (FIXTURES / "jetson_clocks_show_orin_nano_on.txt").read_text()
    )
    assert on == {"jetson_clocks": True, "gpu_freq_max_mhz": 624.75, "gpu_freq_mhz": 624.75}
    off = gpu_parse.parse_jetson_clocks(
        (FIXTURES / "jetson_clocks_show_orin_nano_off.txt").read_text()
    )
    assert off == {"jetson_clocks": False, "gpu_freq_max_mhz": 624.75, "gpu_freq_mhz": 306.0}
    tx1 = gpu_parse.parse_jetson_clocks((FIXTURES / "jetson_clocks_show_tx1.txt").read_text())
    assert tx1["jetson_clocks"] is True and tx1["gpu_freq_max_mhz"] == 998.4
    assert gpu_parse.parse_jetson_clocks("jetson_clocks: must be run as root\n") == {}


def test_nvpmodel_of_a_xavier_nx():
    text = (FIXTURES / "nvpmodel_q_xavier_nx.txt").read_text()
    assert facts_parse.parse_nvpmodel(text) == {
        "power_mode": "MODE_20W_6CORE",
        "power_mode_id": 8.0,
    }


def test_jetson_clocks_is_a_fact_where_the_agent_may_ask(tmp_path, monkeypatch):
    tool = tmp_path / "jetson_clocks"
    tool.write_text(f'#!/bin/sh\ncat "{FIXTURES / "jetson_clocks_show_orin_nano_off.txt"}"\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr(sysinfo, "PROBES", [p for p in probes.PROBES if p[0] == ()])
    assert sysinfo.collect() == {
        "jetson_clocks": False,
        "gpu_freq_max_mhz": 624.75,
        "gpu_freq_mhz": 306.0,
    }
    tool.write_text("#!/bin/sh\necho 'Error: must be run as root'; exit 1\n")
    assert sysinfo.collect() == {}  # a plain user's agent: no fact rather than "unavailable"
