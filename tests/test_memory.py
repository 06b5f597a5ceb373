import resource
from pathlib import Path

import numpy as np
import pytest

from fleet_agent import memory

FIXTURES = Path(__file__).parent / "fixtures" / "sysinfo"


def fixture(name):
    return (FIXTURES / name).read_text()


def test_parse_proc_status_modern_kernel():
    assert memory.parse_proc_status(fixture("proc_self_status_python_x86.txt")) == {
        "rss_mb": 27504 / 1024,
        "peak_rss_mb": 27504 / 1024,
        "rss_anon_mb": 14540 / 1024,
        "rss_file_mb": 12964 / 1024,
    }


def test_parse_proc_status_before_rss_split():
    # Kernel 3.10 (CentOS 7) has no RssAnon/RssFile lines.
    assert memory.parse_proc_status(fixture("proc_self_status_kernel3.10.txt")) == {
        "rss_mb": 14340 / 1024,
        "peak_rss_mb": 14344 / 1024,
    }


def test_parse_proc_status_of_garbage_is_empty():
    assert memory.parse_proc_status("VmRSS: lots\nnothing here\n") == {}


def test_ru_maxrss_units_differ_by_platform():
    assert memory.ru_maxrss_mb(100 * 1024 * 1024, "darwin") == 100.0
    assert memory.ru_maxrss_mb(100 * 1024, "linux") == 100.0


def test_snapshot_live():
    snap = memory.snapshot()
    assert set(snap) == {"rss_mb", "peak_rss_mb", "rss_anon_mb", "rss_file_mb"}
    assert all(type(v) is float for v in snap.values())
    assert 5 < snap["rss_mb"] <= snap["peak_rss_mb"]
    assert snap["rss_anon_mb"] + snap["rss_file_mb"] == pytest.approx(snap["rss_mb"], abs=1)


def test_peak_follows_an_allocation_and_reset_brings_it_down():
    before = memory.snapshot()["rss_mb"]
    block = np.ones(200 * 1024 * 1024 // 8)  # 200 MiB, touched
    assert memory.peak_rss_mb() >= before + 190
    del block
    assert memory.snapshot()["rss_mb"] < before + 50  # large blocks go back to the OS
    assert memory.reset_peak()
    assert memory.peak_rss_mb() < before + 50


def test_peak_without_proc_matches_getrusage():
    # The lifetime peak that macOS falls back to is the same number Linux's kernel keeps.
    rusage_peak = memory.ru_maxrss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "linux")
    assert rusage_peak >= memory.peak_rss_mb() - 1  # VmHWM may have been reset, ru_maxrss not


def test_rss_from_ps_agrees_with_proc():
    # The macOS path, run here: ps and /proc must see the same process size.
    assert memory._rss_from_ps() == pytest.approx(memory.snapshot()["rss_mb"], abs=8)
