"""Memory of this process: RSS now, peak RSS (the GPU's: ``gpu_sampling.py``).

All sizes are MiB (2**20 bytes), the unit behind every ``*_mb`` field. Linux reads
``/proc/self/status``: it has the current RSS split into anonymous and file-backed pages and a
peak (VmHWM) that ``clear_refs`` can reset, so the peak of one phase can be measured apart
from the load. Elsewhere (macOS) only ``getrusage``'s lifetime peak and ``ps`` remain.
"""

import os
import resource
import subprocess
import sys
from typing import Dict, Optional

_MIB = 1024.0 * 1024.0
_PROC_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"
_VMSTAT = "/proc/vmstat"
# /proc/self/status line -> field name; the values there are in kB (KiB).
_STATUS_FIELDS = {
    "VmRSS": "rss_mb",
    "VmHWM": "peak_rss_mb",
    "RssAnon": "rss_anon_mb",
    "RssFile": "rss_file_mb",
}
_COMMAND_TIMEOUT_S = 5.0


def parse_proc_status(text: str) -> Dict[str, float]:
    """The memory lines of a ``/proc/<pid>/status`` text, in MiB, under the names of
    ``_STATUS_FIELDS``. Lines a kernel does not have (RssAnon before 4.5) are left out."""
    result: Dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        name = _STATUS_FIELDS.get(key)
        parts = value.split()
        if name is not None and len(parts) == 2 and parts[1] == "kB":
            result[name] = int(parts[0]) / 1024.0
    return result


def ru_maxrss_mb(ru_maxrss: int, platform: str) -> float:
    """getrusage's peak RSS in MiB: the kernel reports bytes on macOS and KiB on Linux."""
    if platform == "darwin":
        return ru_maxrss / _MIB
    return ru_maxrss / 1024.0


def _read_proc_status() -> Optional[Dict[str, float]]:
    try:
        with open(_PROC_STATUS) as f:
            parsed = parse_proc_status(f.read())
    except OSError:
        return None
    return parsed or None


def _rss_from_ps() -> Optional[float]:
    """Current RSS where there is no /proc (macOS): ``ps`` prints it in KiB."""
    try:
        out = subprocess.run(
            ["ps", "-o", "rss=", "-p", str(os.getpid())],
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT_S,
            check=True,
        ).stdout
        return int(out.strip()) / 1024.0
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _peak_from_rusage() -> float:
    return ru_maxrss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, sys.platform)


def snapshot() -> Dict[str, float]:
    """This process's memory now: ``rss_mb`` and ``peak_rss_mb`` wherever they can be read,
    plus ``rss_anon_mb`` and ``rss_file_mb`` on Linux."""
    status = _read_proc_status()
    if status is not None:
        return status
    result = {"peak_rss_mb": _peak_from_rusage()}
    rss = _rss_from_ps()
    if rss is not None:
        result["rss_mb"] = rss
    return result


def peak_rss_mb() -> float:
    """Peak RSS of this process: since the last successful ``reset_peak()`` on Linux, since
    the process started elsewhere."""
    status = _read_proc_status()
    if status is not None and "peak_rss_mb" in status:
        return status["peak_rss_mb"]
    return _peak_from_rusage()


def reset_peak() -> bool:
    """Set the peak RSS (VmHWM) back to the current RSS; whether the kernel allowed it.

    Writing "5" to ``/proc/self/clear_refs`` does this on Linux 4.0 and later; containers or
    security modules may refuse it, and other systems have no such file.
    """
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def parse_vmstat_oom_kills(text: str) -> Optional[int]:
    """The ``oom_kill`` counter of ``/proc/vmstat`` (Linux 4.13+): every process the kernel's
    OOM killer has killed since boot, a cgroup's limit included; None on older kernels."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return None


def oom_kills() -> Optional[int]:
    """OOM kills on this machine since boot, or None where the kernel does not count them.
    Read before and after a worker, it tells an OOM kill from any other SIGKILL."""
    try:
        with open(_VMSTAT) as f:
            return parse_vmstat_oom_kills(f.read())
    except (OSError, ValueError):
        return None
