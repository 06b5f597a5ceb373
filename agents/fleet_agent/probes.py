"""The one-shot facts about a device that go into the agent's ``sysinfo`` event.

Every probe is best-effort: a file that is missing, a tool that is not installed or prints
something unexpected leaves its facts ``"unavailable"`` (``sysinfo.collect`` sees to that) and
never stops a run. A probe reads its file or runs its tool (through ``live.py``) and hands the
text to its parser in ``facts_parse.py``; macOS, which has neither /proc nor /sys, is asked
with ``sysctl``.
"""

import os
import platform
import re
import sys
from typing import Callable, List, Optional, Tuple

from fleet_agent.facts_parse import (
    UNAVAILABLE,
    Facts,
    cgroup_memory_files,
    parse_cgroup_memory_limit,
    parse_cpufreq,
    parse_cpuinfo,
    parse_device_tree_model,
    parse_meminfo,
    parse_nv_tegra_release,
    parse_nvidia_smi_gpus,
    parse_nvpmodel,
    parse_os_release,
    parse_tegrastats,
)
from fleet_agent.gpu_parse import parse_jetson_clocks
from fleet_agent.live import read_tegrastats_line, read_text, run_tool, thermal_zones
from fleet_agent.live_parse import parse_vcgencmd_temp, parse_vcgencmd_throttled

# Module-level so that tests can point the probes at fixture trees.
_CPUINFO = "/proc/cpuinfo"
_MEMINFO = "/proc/meminfo"
_OS_RELEASE = "/etc/os-release"
_DT_MODEL = "/proc/device-tree/model"
_DMI_DIR = "/sys/class/dmi/id"
_TEGRA_RELEASE = "/etc/nv_tegra_release"
_CPUFREQ_DIR = "/sys/devices/system/cpu/cpu0/cpufreq"
_PROC_CGROUP = "/proc/self/cgroup"

_MIB = 1024.0 * 1024.0


def read_cpufreq(directory: str) -> Facts:
    files = {}
    for name in ("scaling_governor", "scaling_cur_freq", "cpuinfo_max_freq", "scaling_max_freq"):
        try:
            files[name] = read_text(os.path.join(directory, name))
        except OSError:
            continue
    return parse_cpufreq(files)


def _probe_cpu() -> Facts:
    if sys.platform == "darwin":
        brand = run_tool(["sysctl", "-n", "machdep.cpu.brand_string"]).strip()
        return {"cpu_model": brand, "cpu_cores": float(os.cpu_count() or 0) or UNAVAILABLE}
    return parse_cpuinfo(read_text(_CPUINFO))


def _probe_ram() -> Facts:
    if sys.platform == "darwin":
        return {"ram_total_mb": int(run_tool(["sysctl", "-n", "hw.memsize"])) / _MIB}
    return parse_meminfo(read_text(_MEMINFO))


def _probe_platform() -> Facts:
    return {
        "os": platform.system().lower(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "python": platform.python_version(),
    }


def memory_limit_mb() -> Optional[float]:
    """The memory limit of this process's cgroup in MiB (a container's, a lab device's);
    None when there is none or it cannot be read."""
    try:
        files = cgroup_memory_files(read_text(_PROC_CGROUP))
    except OSError:
        return None
    for path in files:
        try:
            return parse_cgroup_memory_limit(read_text(path))
        except (OSError, ValueError):
            continue
    return None


def _probe_memory_limit() -> Facts:
    limit = memory_limit_mb()
    return {} if limit is None else {"memory_limit_mb": limit}


def _probe_os_name() -> Facts:
    if sys.platform == "darwin":
        return {"os_name": "macOS " + platform.mac_ver()[0]}
    return parse_os_release(read_text(_OS_RELEASE))


def _probe_board() -> Facts:
    if sys.platform == "darwin":
        return {"board_model": run_tool(["sysctl", "-n", "hw.model"]).strip()}
    try:
        return parse_device_tree_model(read_text(_DT_MODEL))
    except OSError:
        pass
    # PCs and servers have no device tree; their firmware names the machine.
    vendor = read_text(os.path.join(_DMI_DIR, "sys_vendor")).strip()
    product = read_text(os.path.join(_DMI_DIR, "product_name")).strip()
    return {"board_model": "{} {}".format(vendor, product).strip()}


def _probe_jetson() -> Facts:
    return parse_nv_tegra_release(read_text(_TEGRA_RELEASE))


def _probe_gpu() -> Facts:
    argv = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    return parse_nvidia_smi_gpus(run_tool(argv))


def _probe_cpufreq() -> Facts:
    return read_cpufreq(_CPUFREQ_DIR)


def _probe_temperature() -> Facts:
    zones = thermal_zones()
    facts: Facts = {
        "temp_{}_c".format(re.sub(r"\W", "_", name)): celsius for name, celsius in zones.items()
    }
    if zones:
        facts["temp_c"] = max(zones.values())
    return facts


def _probe_raspberry_pi() -> Facts:
    facts = parse_vcgencmd_throttled(run_tool(["vcgencmd", "get_throttled"]))
    facts["pi_temp_c"] = parse_vcgencmd_temp(run_tool(["vcgencmd", "measure_temp"]))
    return facts


def _probe_power_mode() -> Facts:
    return parse_nvpmodel(run_tool(["nvpmodel", "-q"]))


def _probe_jetson_clocks() -> Facts:
    return parse_jetson_clocks(run_tool(["jetson_clocks", "--show"]))


def _probe_tegrastats() -> Facts:
    return {"tegrastats_" + k: v for k, v in parse_tegrastats(read_tegrastats_line()).items()}


# Each probe with the facts it always reports ("unavailable" when it cannot); a probe may
# add more (per-sensor temperatures, throttling bits, tegrastats readings) when it works.
PROBES: List[Tuple[Tuple[str, ...], Callable[[], Facts]]] = [
    (("cpu_model", "cpu_cores"), _probe_cpu),
    (("ram_total_mb",), _probe_ram),
    (("memory_limit_mb",), _probe_memory_limit),
    (("os", "kernel", "arch", "python"), _probe_platform),
    (("os_name",), _probe_os_name),
    (("board_model",), _probe_board),
    (("l4t_release", "jetpack"), _probe_jetson),
    (("gpu_name", "gpu_count", "gpu_driver", "gpu_memory_total_mb"), _probe_gpu),
    (("cpu_governor", "cpu_freq_mhz", "cpu_freq_max_mhz"), _probe_cpufreq),
    (("temp_c",), _probe_temperature),
    (("throttled_bits", "pi_temp_c"), _probe_raspberry_pi),
    (("power_mode",), _probe_power_mode),  # the nvpmodel mode
    ((), _probe_jetson_clocks),  # root only: absent rather than "unavailable" on most
    (("tegrastats_ram_used_mb",), _probe_tegrastats),
]
