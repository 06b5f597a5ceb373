"""The GPU while a repetition runs: clocks, temperature, power, utilisation, throttle reasons
and this process's device memory, read by NVML (nvidia-ml-py's ``pynvml``) where it is
installed, else by ``nvidia-smi``.

The worker tells the watch each phase as it begins (``baseline``, ``load``, ``warm``,
``timed``, ``after``); every reading is kept with its phase. The memory fields come from the
readings at the phase changes and the peak of all; the GPU figures from the timed phase.

NVML is a few library calls, so a thread reads it every ``INTERVAL_S`` in the worker. Without
it, starting ``nvidia-smi`` from the worker every interval would fork a process of gigabytes
during the timed phase; instead two ``nvidia-smi ... -lms`` loops start before the model
loads (``toolstream.py``) and print a line every interval until the watch stops them.
"""

import os
import threading
from typing import Any, Dict, List, Optional, Tuple

from fleet_agent import live
from fleet_agent.gpu_parse import (
    SMI_FIELDS,
    SMI_FIELDS_NEW,
    GpuSample,
    parse_smi_apps,
    parse_smi_samples,
    summarise,
)
from fleet_agent.toolstream import ToolStream

INTERVAL_S = 0.5
_MIB = 1024.0 * 1024.0
# How long a phase change waits for nvidia-smi's next line before it goes on without one.
_NEXT_LINE_S = 4 * INTERVAL_S

Reading = Tuple[str, Optional[GpuSample], Optional[float]]  # phase, GPU, this process's MiB


class Watch:
    """Readings of one GPU by phase; ``fields()`` turns them into result fields."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._phase = "baseline"
        self._readings: List[Reading] = []
        self._lock = threading.Lock()
        self.process_listed = False  # the driver lists this process (not in every container)

    def _add(self, sample: Optional[GpuSample], process_mb: Optional[float]) -> None:
        with self._lock:
            self._readings.append((self._phase, sample, process_mb))
            self.process_listed = self.process_listed or process_mb is not None

    def phase(self, name: str) -> None:
        """``name`` begins: readings from now on are the phase's, the first one now."""
        with self._lock:
            self._phase = name

    def stop(self) -> None:
        """No more readings."""

    def fields(self) -> Dict[str, Any]:
        """The GPU figures of the timed phase (``gpu_parse.summarise``) and device memory:
        this process's where the driver lists it (0 before it made a CUDA context), else the
        whole GPU's (``gpu_memory_scope`` says which)."""
        with self._lock:
            readings = list(self._readings)
        fields = summarise([s for p, s, _ in readings if p == "timed" and s is not None])
        values: List[Tuple[str, float]] = []
        if self.process_listed:
            scope = "process"
            values = [(p, m if m is not None else 0.0) for p, _, m in readings]
        else:
            scope = "device"
            for p, sample, _ in readings:
                if sample is not None and sample.memory_used_mb is not None:
                    values.append((p, sample.memory_used_mb))
        memory = _memory_fields(values)
        if memory:
            fields["gpu_memory_scope"] = scope
        fields.update(memory)
        return fields


def _memory_fields(values: List[Tuple[str, float]]) -> Dict[str, float]:
    """Before load (the last reading before it), after load (the first after it), after
    the timed phase (the last), the peak of all, and the peak's rise over the baseline."""
    before = [m for p, m in values if p == "baseline"]
    after_load = [m for p, m in values if p not in ("baseline", "load")]
    if not before or not after_load:
        return {}
    peak = max(m for _, m in values)
    return {
        "gpu_memory_baseline_mb": before[-1],
        "gpu_memory_after_load_mb": after_load[0],
        "gpu_memory_peak_mb": peak,
        "gpu_memory_after_run_mb": values[-1][1],
        "gpu_memory_delta_mb": peak - before[-1],
    }


class NvmlWatch(Watch):
    """NVML read in a thread every interval, and at once at each phase change."""

    def __init__(self, nvml: Any, index: int, pid: int, interval_s: float = INTERVAL_S) -> None:
        super().__init__(pid)
        self._nvml = nvml
        nvml.nvmlInit()
        self._handle = nvml.nvmlDeviceGetHandleByIndex(index)
        # Renamed "clocks event reasons" in driver 535; older nvidia-ml-py has only this name.
        self._reasons = getattr(
            nvml,
            "nvmlDeviceGetCurrentClocksEventReasons",
            getattr(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None),
        )
        self._stop = threading.Event()
        self._read()
        self._thread = threading.Thread(
            target=self._loop, args=(interval_s,), name="gpu-watch", daemon=True
        )
        self._thread.start()

    def _call(self, read: Any) -> Optional[float]:
        try:
            return float(read())
        except self._nvml.NVMLError:  # a figure this GPU or driver does not have
            return None

    def _read(self) -> None:
        n, h = self._nvml, self._handle
        reasons = self._call(lambda: self._reasons(h)) if self._reasons else None
        sample = GpuSample(
            self._call(lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)),
            self._call(lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)),
            self._call(lambda: n.nvmlDeviceGetPowerUsage(h) / 1000.0),  # mW
            self._call(lambda: n.nvmlDeviceGetUtilizationRates(h).gpu),
            self._call(lambda: n.nvmlDeviceGetMemoryInfo(h).used / _MIB),
            int(reasons or 0),
        )
        self._add(sample, self._process_mb())

    def _process_mb(self) -> Optional[float]:
        try:
            processes = self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle)
        except self._nvml.NVMLError:
            return None
        used = [p.usedGpuMemory for p in processes if p.pid == self._pid]
        known = [u for u in used if u is not None]  # None: the driver cannot tell
        return sum(known) / _MIB if known else None

    def _loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self._read()

    def phase(self, name: str) -> None:
        super().phase(name)
        self._read()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._read()
        self._nvml.nvmlShutdown()


class SmiWatch(Watch):
    """Two ``nvidia-smi -lms`` loops: the GPU's figures, and the compute processes."""

    def __init__(self, index: int, fields: Tuple[str, ...], pid: int) -> None:
        super().__init__(pid)
        period = str(int(INTERVAL_S * 1000))
        base = ["nvidia-smi", "-i", str(index), "--format=csv,noheader,nounits", "-lms", period]
        self._index = index
        self._process_mb: Optional[float] = None
        self._lines = threading.Condition()
        self._count = 0
        self._gpu = ToolStream([*base, "--query-gpu=" + ",".join(fields)], self._on_gpu)
        self._apps = ToolStream([*base, "--query-compute-apps=pid,used_memory"], self._on_app)
        self._next_line(0)  # the baseline's reading: nvidia-smi takes a moment to start

    def _next_line(self, count: int) -> None:
        """Wait for the GPU's reading after the ``count``-th, or until _NEXT_LINE_S passed."""
        with self._lines:
            self._lines.wait_for(lambda: self._count > count, _NEXT_LINE_S)

    def _on_gpu(self, line: str) -> None:
        sample = parse_smi_samples(line).get(self._index)
        if sample is not None:
            with self._lines:
                self._add(sample, self._process_mb)
                self._count += 1
                self._lines.notify_all()

    def _on_app(self, line: str) -> None:
        used = parse_smi_apps(line).get(self._pid)
        if used is not None:
            # Each loop lists every process; ours, once listed, stays with its latest figure.
            self._process_mb = used
            self._add(None, used)

    def phase(self, name: str) -> None:
        super().phase(name)
        self._next_line(self._count)

    def stop(self) -> None:
        self.phase("after")
        self._gpu.stop()
        self._apps.stop()


def smi_fields(index: int) -> Optional[Tuple[str, ...]]:
    """The query this driver's nvidia-smi answers for GPU ``index``, or None: no nvidia-smi,
    no such GPU, or no driver."""
    for fields in (SMI_FIELDS_NEW, SMI_FIELDS):
        argv = ["nvidia-smi", "-i", str(index), "--query-gpu=" + ",".join(fields)]
        try:
            out = live.run_tool([*argv, "--format=csv,noheader,nounits"])
        except OSError:
            continue  # an unknown field fails the whole query: try the other name
        if index in parse_smi_samples(out):
            return fields
    return None


def start(index: int) -> Optional[Watch]:
    """A watch on GPU ``index`` for this process: NVML when nvidia-ml-py is installed and
    the driver answers, else nvidia-smi; None where neither can read it."""
    pid = os.getpid()
    try:
        import pynvml  # type: ignore[import-not-found,unused-ignore]  # optional: nvidia-ml-py
    except ImportError:
        pass
    else:
        try:
            return NvmlWatch(pynvml, index, pid)
        except pynvml.NVMLError:  # no driver, no such GPU: nvidia-smi may still tell
            pass
    fields = smi_fields(index)
    return None if fields is None else SmiWatch(index, fields, pid)


def gpu_name(index: int) -> str:
    """GPU ``index``'s name as nvidia-smi says it ("NVIDIA H200"); "" where it cannot."""
    argv = ["nvidia-smi", "-i", str(index), "--query-gpu=name", "--format=csv,noheader"]
    try:
        return live.run_tool(argv).strip()
    except OSError:
        return ""
