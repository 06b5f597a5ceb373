"""Facts about the device a result was measured on.

Every probe is best-effort: a file that is missing, a tool that is not installed or prints
something unexpected leaves its facts as ``"unavailable"`` and never stops a run. Parsers are
pure functions of the text a file or tool gives (tested on real samples in
``tests/fixtures/sysinfo``); readers and commands around them are kept thin. Commands are argv
lists with short timeouts. Numbers are floats, as the result record requires.
"""

import contextlib
import os
import platform
import re
import signal
import subprocess
import sys
import threading
from importlib import metadata
from typing import Callable, Dict, List, Optional, Tuple

Facts = Dict[str, object]

UNAVAILABLE = "unavailable"

# Module-level so that tests can point the readers at fixture trees.
_CPUINFO = "/proc/cpuinfo"
_MEMINFO = "/proc/meminfo"
_OS_RELEASE = "/etc/os-release"
_DT_MODEL = "/proc/device-tree/model"
_DMI_DIR = "/sys/class/dmi/id"
_TEGRA_RELEASE = "/etc/nv_tegra_release"
_CPUFREQ_DIR = "/sys/devices/system/cpu/cpu0/cpufreq"
_THERMAL_ROOT = "/sys/class/thermal"
_PROC_CGROUP = "/proc/self/cgroup"
_CGROUP_ROOT = "/sys/fs/cgroup"

_COMMAND_TIMEOUT_S = 5.0
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

# vcgencmd get_throttled bits (Raspberry Pi documentation): the low bits are now, bits
# 16..19 the same conditions since boot.
_THROTTLE_BITS = {
    0: "under_voltage_now",
    1: "arm_freq_capped_now",
    2: "throttled_now",
    3: "soft_temp_limit_now",
    16: "under_voltage_since_boot",
    17: "arm_freq_capped_since_boot",
    18: "throttled_since_boot",
    19: "soft_temp_limit_since_boot",
}
_THROTTLE_NOW_MASK = 0xF

# Disabled Tegra sensors read -256 °C; nothing real is outside this range.
_PLAUSIBLE_C = (-40.0, 150.0)


# ---------------------------------------------------------------- parsers (pure)


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


def parse_thermal_zones(zones: List[Tuple[str, str]]) -> Dict[str, float]:
    """(type, temp) text pairs of /sys/class/thermal zones (millidegrees) -> °C per type, the
    hottest where a type repeats; unreadable and implausible readings (disabled sensors) are
    dropped, so that one broken sensor does not hide the others."""
    temps: Dict[str, float] = {}
    for zone_type, temp in zones:
        try:
            celsius = int(temp) / 1000.0
        except ValueError:
            continue
        if not _PLAUSIBLE_C[0] < celsius < _PLAUSIBLE_C[1]:
            continue
        name = zone_type.strip()
        temps[name] = max(celsius, temps.get(name, celsius))
    return temps


def parse_vcgencmd_temp(text: str) -> float:
    """``vcgencmd measure_temp`` prints ``temp=48.3'C``."""
    match = re.search(r"temp=(-?[\d.]+)'C", text)
    if match is None:
        raise ValueError("not a vcgencmd temperature: {!r}".format(text.strip()))
    return float(match.group(1))


def parse_vcgencmd_throttled(text: str) -> Facts:
    """``vcgencmd get_throttled`` (``throttled=0x50005``): the raw bits and each condition."""
    match = re.search(r"throttled=(0x[0-9a-fA-F]+)", text)
    if match is None:
        raise ValueError("not a vcgencmd throttled value: {!r}".format(text.strip()))
    bits = int(match.group(1), 16)
    facts: Facts = {"throttled_bits": match.group(1)}
    for bit, name in _THROTTLE_BITS.items():
        facts[name] = bool(bits >> bit & 1)
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
    for rail, now in re.findall(r"\b((?:VDD|VIN|POM)_\w+) (\d+)(?:mW)?/\d+(?:mW)?", line):
        facts["power_{}_mw".format(rail.lower())] = float(now)
    return facts


# ---------------------------------------------------------------- readers and commands


def _read(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def _run(argv: List[str]) -> str:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=True
    ).stdout


def read_cpufreq(directory: str) -> Facts:
    files = {}
    for name in ("scaling_governor", "scaling_cur_freq", "cpuinfo_max_freq", "scaling_max_freq"):
        try:
            files[name] = _read(os.path.join(directory, name))
        except OSError:
            continue
    return parse_cpufreq(files)


def read_thermal_zones(root: str) -> Dict[str, float]:
    zones = []
    for entry in sorted(os.listdir(root)):
        if not entry.startswith("thermal_zone"):
            continue
        try:
            zones.append(
                (_read(os.path.join(root, entry, "type")), _read(os.path.join(root, entry, "temp")))
            )
        except OSError:
            continue  # some Tegra zones refuse reads while their sensor is off
    return parse_thermal_zones(zones)


def read_tegrastats_line(timeout: Optional[float] = None) -> str:
    """One line from ``tegrastats``, which otherwise prints every interval until killed;
    "" if it prints nothing in time."""
    proc = subprocess.Popen(
        ["tegrastats", "--interval", "100"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group, so that nothing it started outlives it
    )

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(_COMMAND_TIMEOUT_S if timeout is None else timeout, kill)
    timer.start()
    assert proc.stdout is not None  # for mypy: stdout=PIPE was asked for
    try:
        return proc.stdout.readline()
    finally:
        timer.cancel()
        kill()
        proc.wait()
        proc.stdout.close()


def temperature_c() -> Optional[float]:
    """The hottest sensor now, in °C: thermal zones, else ``vcgencmd``; None without either.
    Cheap enough to sample between timed runs."""
    try:
        zones = read_thermal_zones(_THERMAL_ROOT)
    except OSError:
        zones = {}
    if zones:
        return max(zones.values())
    try:
        return parse_vcgencmd_temp(_run(["vcgencmd", "measure_temp"]))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def throttled_now() -> Optional[bool]:
    """Whether a Raspberry Pi is throttled, frequency-capped, at its soft temperature limit
    or under-volted right now; None where ``vcgencmd`` cannot tell."""
    try:
        out = _run(["vcgencmd", "get_throttled"])
        bits = int(str(parse_vcgencmd_throttled(out)["throttled_bits"]), 16)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return bool(bits & _THROTTLE_NOW_MASK)


# Module -> the distributions that install it (vendor builds of ONNX Runtime and TensorFlow
# keep the module name and change the distribution's).
_DISTRIBUTIONS = {
    "numpy": ("numpy",),
    "onnxruntime": (
        "onnxruntime",
        "onnxruntime-gpu",
        "onnxruntime-openvino",
        "onnxruntime-directml",
        "onnxruntime-qnn",
        "onnxruntime-silicon",
    ),
    "ai_edge_litert": ("ai-edge-litert", "ai-edge-litert-nightly"),
    "tflite_runtime": ("tflite-runtime",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-aarch64", "tensorflow-macos"),
}


def runtimes_installed() -> Dict[str, str]:
    """Runtime packages installed here, with versions, for the hello event. Read from the
    package metadata: importing them would cost the agent seconds and hundreds of MB."""
    found = {}
    for module, distributions in _DISTRIBUTIONS.items():
        for distribution in distributions:
            try:
                found[module] = metadata.version(distribution)
            except Exception:  # noqa: S112 - PackageNotFoundError, or no metadata at all
                continue
            break
    return found


# ---------------------------------------------------------------- probes


def _probe_cpu() -> Facts:
    if sys.platform == "darwin":
        brand = _run(["sysctl", "-n", "machdep.cpu.brand_string"]).strip()
        return {"cpu_model": brand, "cpu_cores": float(os.cpu_count() or 0) or UNAVAILABLE}
    return parse_cpuinfo(_read(_CPUINFO))


def _probe_ram() -> Facts:
    if sys.platform == "darwin":
        return {"ram_total_mb": int(_run(["sysctl", "-n", "hw.memsize"])) / _MIB}
    return parse_meminfo(_read(_MEMINFO))


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
        files = cgroup_memory_files(_read(_PROC_CGROUP))
    except OSError:
        return None
    for path in files:
        try:
            return parse_cgroup_memory_limit(_read(path))
        except (OSError, ValueError):
            continue
    return None


def _probe_memory_limit() -> Facts:
    limit = memory_limit_mb()
    return {} if limit is None else {"memory_limit_mb": limit}


def _probe_os_name() -> Facts:
    if sys.platform == "darwin":
        return {"os_name": "macOS " + platform.mac_ver()[0]}
    return parse_os_release(_read(_OS_RELEASE))


def _probe_board() -> Facts:
    if sys.platform == "darwin":
        return {"board_model": _run(["sysctl", "-n", "hw.model"]).strip()}
    try:
        return parse_device_tree_model(_read(_DT_MODEL))
    except OSError:
        pass
    # PCs and servers have no device tree; their firmware names the machine.
    vendor = _read(os.path.join(_DMI_DIR, "sys_vendor")).strip()
    product = _read(os.path.join(_DMI_DIR, "product_name")).strip()
    return {"board_model": "{} {}".format(vendor, product).strip()}


def _probe_jetson() -> Facts:
    return parse_nv_tegra_release(_read(_TEGRA_RELEASE))


def _probe_gpu() -> Facts:
    argv = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    return parse_nvidia_smi_gpus(_run(argv))


def _probe_cpufreq() -> Facts:
    return read_cpufreq(_CPUFREQ_DIR)


def _probe_temperature() -> Facts:
    zones = read_thermal_zones(_THERMAL_ROOT)
    facts: Facts = {
        "temp_{}_c".format(re.sub(r"\W", "_", name)): celsius for name, celsius in zones.items()
    }
    if zones:
        facts["temp_c"] = max(zones.values())
    return facts


def _probe_raspberry_pi() -> Facts:
    facts = parse_vcgencmd_throttled(_run(["vcgencmd", "get_throttled"]))
    facts["pi_temp_c"] = parse_vcgencmd_temp(_run(["vcgencmd", "measure_temp"]))
    return facts


def _probe_power_mode() -> Facts:
    return parse_nvpmodel(_run(["nvpmodel", "-q"]))


def _probe_tegrastats() -> Facts:
    return {"tegrastats_" + k: v for k, v in parse_tegrastats(read_tegrastats_line()).items()}


# Each probe with the facts it always reports ("unavailable" when it cannot); a probe may
# add more (per-sensor temperatures, throttling bits, tegrastats readings) when it works.
_PROBES: List[Tuple[Tuple[str, ...], Callable[[], Facts]]] = [
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
    (("power_mode",), _probe_power_mode),
    (("tegrastats_ram_used_mb",), _probe_tegrastats),
]


def collect() -> Facts:
    """All facts about this device; never raises."""
    facts: Facts = {}
    for keys, probe in _PROBES:
        try:
            found = probe()
        except Exception:  # best-effort by design: a broken probe must not end the run
            found = {}
        for key in keys:
            facts.setdefault(key, UNAVAILABLE)
        for key, value in found.items():
            # An earlier probe's real value (cpuinfo's board Model) is kept over "unavailable".
            if value != UNAVAILABLE or key not in facts:
                facts[key] = value
    return facts
