"""Parsers of the files and tools that tell what a device is and how it is doing.

Pure functions of the text a file or tool gives, so that each is tested on real samples
(``tests/fixtures/sysinfo``) without the board it comes from. The probes (``probes.py``) read
the files and run the tools around them. Numbers are floats, as the result record requires;
what a text does not have is left out, or ``"unavailable"`` where a fact must always be there.
The parsers of what the live readers read (thermal zones, ``vcgencmd``) are in
``live_parse.py``, so that the pre-flight check loads them without these.
"""

import os
import re
from typing import Dict, List, Optional, Tuple

from fleet_agent.protocol import Fact

Facts = Dict[str, Fact]

UNAVAILABLE = "unavailable"

_CGROUP_ROOT = "/sys/fs/cgroup"
_MIB = 1024.0 * 1024.0

# (implementer, part) from /proc/cpuinfo -> core name; arm64 kernels print no model name,
# and 32-bit ones only "ARMv7 Processor", so the part number is what tells cores apart.
_ARM_PARTS = {
    ("0x41", "0xd03"): "Cortex-A53",
    ("0x41", "0xd04"): "Cortex-A35",
    ("0x41", "0xd05"): "Cortex-A55",
    ("0x41", "0xd07"): "Cortex-A57",
    ("0x41", "0xd08"): "Cortex-A72",
    ("0x41", "0xd09"): "Cortex-A73",
    ("0x41", "0xd0a"): "Cortex-A75",
    ("0x41", "0xd0b"): "Cortex-A76",
    ("0x41", "0xd0c"): "Neoverse-N1",
    ("0x41", "0xd0d"): "Cortex-A77",
    ("0x41", "0xd40"): "Neoverse-V1",
    ("0x41", "0xd41"): "Cortex-A78",
    ("0x41", "0xd42"): "Cortex-A78AE",
    ("0x41", "0xd44"): "Cortex-X1",
    ("0x41", "0xd46"): "Cortex-A510",
    ("0x41", "0xd47"): "Cortex-A710",
    ("0x41", "0xd48"): "Cortex-X2",
    ("0x41", "0xd49"): "Neoverse-N2",
    ("0x41", "0xd4b"): "Cortex-A78C",
    ("0x41", "0xd4f"): "Neoverse-V2",
    ("0x4e", "0x004"): "NVIDIA Carmel",
}

# L4T release -> JetPack; only releases NVIDIA shipped as a JetPack are listed.
_JETPACK = {
    "32.7.1": "4.6.1",
    "32.7.2": "4.6.2",
    "32.7.3": "4.6.3",
    "32.7.4": "4.6.4",
    "32.7.5": "4.6.5",
    "35.3.1": "5.1.1",
    "35.4.1": "5.1.2",
    "35.5.0": "5.1.3",
    "36.3.0": "6.0",
    "36.4.0": "6.1",
    "36.4.3": "6.2",
}


def _key_values(text: str, sep: str = ":") -> List[Tuple[str, str]]:
    pairs = []
    for line in text.splitlines():
        key, found, value = line.partition(sep)
        if found:
            pairs.append((key.strip(), value.strip()))
    return pairs


def parse_cpuinfo(text: str) -> Facts:
    """CPU model and logical core count from /proc/cpuinfo (x86 and ARM); ``board_model`` too
    where the kernel prints a Model line (Raspberry Pi), ``cpu_freq_mhz`` where it prints the
    clock (x86)."""
    pairs = _key_values(text)
    cores = sum(1 for key, _ in pairs if key == "processor")
    first: Dict[str, str] = {}
    for key, value in pairs:
        first.setdefault(key, value)
    arm_names: List[str] = []
    implementer = ""
    for key, value in pairs:
        if key == "CPU implementer":
            implementer = value
        elif key == "CPU part":
            name = _ARM_PARTS.get((implementer, value))
            if name is not None and name not in arm_names:
                arm_names.append(name)
    if arm_names:
        model = "ARM " + " + ".join(arm_names)
    else:
        model = first.get("model name") or first.get("Hardware") or UNAVAILABLE
    facts: Facts = {"cpu_model": model, "cpu_cores": float(cores) if cores else UNAVAILABLE}
    if "Model" in first:
        facts["board_model"] = first["Model"]
    if "cpu MHz" in first:  # x86 only; virtual machines often have no cpufreq to ask
        facts["cpu_freq_mhz"] = float(first["cpu MHz"])
    return facts


def parse_meminfo(text: str) -> Facts:
    """Total and available RAM in MiB from /proc/meminfo (values there are in kB = KiB)."""
    values = dict(_key_values(text))
    facts: Facts = {}
    for key, name in (("MemTotal", "ram_total_mb"), ("MemAvailable", "ram_available_mb")):
        if key in values:
            facts[name] = int(values[key].split()[0]) / 1024.0
    return facts


def parse_cgroup_memory_limit(text: str) -> Optional[float]:
    """A cgroup's memory limit in MiB from ``memory.max`` (v2) or ``memory.limit_in_bytes``
    (v1); None for no limit ("max", or v1's page-rounded 2**63)."""
    value = text.strip()
    if not value or value == "max":
        return None
    limit = int(value)
    return None if limit >= 1 << 62 else limit / _MIB


def cgroup_memory_files(proc_cgroup: str) -> List[str]:
    """Where this process's cgroup memory limit may be, from ``/proc/self/cgroup``: the v1
    memory controller's file, else the v2 one; the path as seen from inside a cgroup
    namespace (the root) last."""
    candidates = []
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if "memory" in controllers.split(","):
            base = os.path.join(_CGROUP_ROOT, "memory")
            for where in (path.lstrip("/"), ""):
                candidates.append(os.path.join(base, where, "memory.limit_in_bytes"))
        elif controllers == "":
            for where in (path.lstrip("/"), ""):
                candidates.append(os.path.join(_CGROUP_ROOT, where, "memory.max"))
    return candidates


def parse_os_release(text: str) -> Facts:
    """The distribution's PRETTY_NAME from /etc/os-release."""
    values = dict(_key_values(text, sep="="))
    if "PRETTY_NAME" not in values:
        return {}
    return {"os_name": values["PRETTY_NAME"].strip("\"'")}


def parse_device_tree_model(text: str) -> Facts:
    """Board name from /proc/device-tree/model (NUL-terminated)."""
    model = text.strip("\x00\n ")
    return {"board_model": model} if model else {}


def parse_nv_tegra_release(text: str) -> Facts:
    """L4T release (e.g. 36.3.0) and its JetPack from /etc/nv_tegra_release."""
    match = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)\.(\d+)", text)
    if match is None:
        return {}
    release = "{}.{}.{}".format(*match.groups())
    return {"l4t_release": release, "jetpack": _JETPACK.get(release, UNAVAILABLE)}


def parse_nvidia_smi_gpus(text: str) -> Facts:
    """GPUs from ``nvidia-smi --query-gpu=name,driver_version,memory.total
    --format=csv,noheader``: distinct names joined with " + ", count, driver, and the memory
    of all GPUs together in MiB (absent where the driver says [N/A], as on Jetson)."""
    names: List[str] = []
    drivers: List[str] = []
    count = 0
    memory = 0.0
    memory_known = False
    for line in text.splitlines():
        fields = [f.strip() for f in line.rsplit(",", 2)]
        if len(fields) != 3 or not fields[0]:
            continue
        name, driver, total = fields
        count += 1
        if name not in names:
            names.append(name)
        if driver not in drivers:
            drivers.append(driver)
        size = total.split()
        if len(size) == 2 and size[1] == "MiB":
            memory += float(size[0])
            memory_known = True
    if not count:
        return {}
    facts: Facts = {
        "gpu_name": " + ".join(names),
        "gpu_count": float(count),
        "gpu_driver": " + ".join(drivers),
    }
    if memory_known:
        facts["gpu_memory_total_mb"] = memory
    return facts


def parse_cpufreq(files: Dict[str, str]) -> Facts:
    """Governor and frequencies (MHz) from the text of cpufreq files, keyed by file name
    (scaling_governor, scaling_cur_freq, cpuinfo_max_freq or scaling_max_freq; kHz)."""
    facts: Facts = {}
    if "scaling_governor" in files:
        facts["cpu_governor"] = files["scaling_governor"].strip()
    if "scaling_cur_freq" in files:
        facts["cpu_freq_mhz"] = int(files["scaling_cur_freq"]) / 1000.0
    max_freq = files.get("cpuinfo_max_freq", files.get("scaling_max_freq"))
    if max_freq is not None:
        facts["cpu_freq_max_mhz"] = int(max_freq) / 1000.0
    return facts


def parse_nvpmodel(text: str) -> Facts:
    """``nvpmodel -q``: the power mode's name and, on the following line, its number."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("NV Power Mode:"):
            facts: Facts = {"power_mode": line.split(":", 1)[1].strip()}
            if i + 1 < len(lines) and lines[i + 1].isdigit():
                facts["power_mode_id"] = float(lines[i + 1])
            return facts
    return {}


def parse_tegrastats(line: str) -> Facts:
    """One ``tegrastats`` line (JetPack 4 to 6): RAM and swap (MiB), CPU load (mean of the
    online cores, %) and frequency (highest, MHz), memory controller and GPU (GR3D) load,
    temperatures (``temp_<sensor>_c``) and power rails (``power_<rail>_mw``, current)."""
    facts: Facts = {}
    for name, label in (("ram", "RAM"), ("swap", "SWAP")):
        match = re.search(r"\b{} (\d+)/(\d+)MB".format(label), line)
        if match is not None:
            facts[name + "_used_mb"] = float(match.group(1))
            facts[name + "_total_mb"] = float(match.group(2))
    match = re.search(r"\bCPU \[([^\]]*)\]", line)
    if match is not None:
        cores = re.findall(r"(\d+)%@(\d+)", match.group(1))
        if cores:
            facts["cpu_cores_online"] = float(len(cores))
            facts["cpu_load_pct"] = sum(float(load) for load, _ in cores) / len(cores)
            facts["cpu_freq_mhz"] = max(float(freq) for _, freq in cores)
    match = re.search(r"\bEMC_FREQ (\d+)%", line)
    if match is not None:
        facts["emc_load_pct"] = float(match.group(1))
    match = re.search(r"\bGR3D_FREQ (\d+)%(?:@\[?(\d+))?", line)
    if match is not None:
        facts["gpu_load_pct"] = float(match.group(1))
        if match.group(2) is not None:
            facts["gpu_freq_mhz"] = float(match.group(2))
    for sensor, celsius in re.findall(r"\b(\w+)@(-?[\d.]+)C\b", line):
        facts["temp_{}_c".format(sensor.lower())] = float(celsius)
    # VDDQ_VDD2_1V8AO: AGX Orin's memory rail, part of the module's power.
    for rail, now in re.findall(r"\b((?:VDDQ?|VIN|POM)_\w+) (\d+)(?:mW)?/\d+(?:mW)?", line):
        facts["power_{}_mw".format(rail.lower())] = float(now)
    return facts
