"""Parsers of what NVIDIA's tools say about a GPU while a case runs, and their summary.

Pure functions of the text ``nvidia-smi`` prints (or of the numbers NVML returns), so that
each is tested on captured output (``tests/fixtures/gpu``) without a GPU. The readers that
run the tools, and the sampler thread, are in ``gpu_sampling.py``.
"""

from typing import Any, Dict, List, NamedTuple, Optional, Sequence

from fleet_agent.protocol import Fact

# One line per GPU, in this order; `-i N` keeps it to the case's GPU.
SMI_FIELDS = (
    "index",
    "clocks.sm",
    "temperature.gpu",
    "power.draw",
    "utilization.gpu",
    "memory.used",
    "clocks_throttle_reasons.active",
)
# Drivers from 535 call the last field clocks_event_reasons.active; older ones know only the
# name above, and newer ones may drop it: the sampler asks with one, then the other.
SMI_FIELDS_NEW = (*SMI_FIELDS[:-1], "clocks_event_reasons.active")

# NVML's clock throttle (since driver 535: "clocks event") reason bits, nvml.h.
THROTTLE_BITS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# The reasons that mean the GPU ran slower than it can because of heat or power: a result
# timed under them is not valid, as CPU throttling makes it not valid.
SLOWDOWNS = (
    "sw_power_cap",
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
)
# Idle shows between two runs of a small model; it says nothing about the timed runs.
_NOT_RECORDED = ("gpu_idle",)


class GpuSample(NamedTuple):
    """One reading of one GPU; None where the driver has no figure ([N/A], as on Jetson)."""

    clock_mhz: Optional[float]
    temp_c: Optional[float]
    power_w: Optional[float]
    util_pct: Optional[float]
    memory_used_mb: Optional[float]
    throttle_bits: int


def _number(text: str) -> Optional[float]:
    try:
        return float(text.strip())
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


def parse_smi_samples(text: str) -> Dict[int, GpuSample]:
    """GPU index -> its reading, from ``nvidia-smi --query-gpu=<SMI_FIELDS>
    --format=csv,noheader,nounits``; lines that are not such a reading are left out."""
    samples: Dict[int, GpuSample] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != len(SMI_FIELDS) or not parts[0].isdigit():
            continue
        try:
            bits = int(parts[6], 16)
        except ValueError:
            bits = 0
        samples[int(parts[0])] = GpuSample(
            _number(parts[1]),
            _number(parts[2]),
            _number(parts[3]),
            _number(parts[4]),
            _number(parts[5]),
            bits,
        )
    return samples


def parse_smi_apps(text: str) -> Dict[int, float]:
    """PID -> device memory in MiB, from ``nvidia-smi --query-compute-apps=pid,used_memory
    --format=csv,noheader,nounits`` (a process listed twice, on two GPUs, is summed)."""
    used: Dict[int, float] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        mib = _number(parts[1])
        if mib is not None:
            pid = int(parts[0])
            used[pid] = used.get(pid, 0.0) + mib
    return used


def throttle_names(bits: int) -> List[str]:
    """The names of the reasons set in ``bits``, in NVML's order."""
    return [name for bit, name in sorted(THROTTLE_BITS.items()) if bits & bit]


def _values(samples: Sequence[GpuSample], index: int) -> List[float]:
    values = [s[index] for s in samples]
    return [float(v) for v in values if v is not None]


def summarise(samples: Sequence[GpuSample]) -> Dict[str, Any]:
    """Result fields from the readings of a timed phase: SM clock range, hottest reading,
    mean power and utilisation, and every throttle reason seen (but idle), comma-separated."""
    if not samples:
        return {}
    fields: Dict[str, Any] = {}
    clocks = _values(samples, 0)
    if clocks:
        fields.update(gpu_clock_mhz_min=min(clocks), gpu_clock_mhz_max=max(clocks))
    for index, name, how in (
        (1, "gpu_temp_max_c", max),
        (2, "gpu_power_w_mean", _mean),
        (3, "gpu_util_mean", _mean),
    ):
        values = _values(samples, index)
        if values:
            fields[name] = how(values)
    seen = 0
    for sample in samples:
        seen |= sample.throttle_bits
    names = [n for n in throttle_names(seen) if n not in _NOT_RECORDED]
    fields["gpu_throttle_reasons"] = ",".join(names)
    return fields


def _mean(values: List[float]) -> float:
    return sum(values) / len(values)


def slowdowns(reasons: str) -> List[str]:
    """The throttle reasons of a ``gpu_throttle_reasons`` field that make a result invalid."""
    return [r for r in reasons.split(",") if r in SLOWDOWNS]


def parse_jetson_clocks(text: str) -> Dict[str, Fact]:
    """``jetson_clocks --show``: whether the clocks are pinned at their maximum (what
    ``jetson_clocks`` does: every online CPU's and the GPU's MinFreq equal to MaxFreq), and
    the GPU's current and maximum clock in MHz. Empty for a text without the GPU line."""
    pinned = []
    facts: Dict[str, Fact] = {}
    for line in text.splitlines():
        words = dict(w.split("=", 1) for w in line.split() if "=" in w)
        if "MinFreq" not in words or "MaxFreq" not in words:
            continue
        head = line.split()[0]
        if head == "GPU" or (head.startswith("cpu") and words.get("Online", "1") == "1"):
            pinned.append(words["MinFreq"] == words["MaxFreq"])
        if head == "GPU":
            facts["gpu_freq_max_mhz"] = int(words["MaxFreq"]) / 1e6
            if "CurrentFreq" in words:
                facts["gpu_freq_mhz"] = int(words["CurrentFreq"]) / 1e6
    if "gpu_freq_max_mhz" not in facts:
        return {}
    facts["jetson_clocks"] = all(pinned)
    return facts
