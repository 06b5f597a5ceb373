"""The device's cache of built engines: TensorRT engines and compiled CoreML models.

Building one takes seconds to minutes (a TensorRT engine on a Jetson), and each repetition
runs in a fresh worker: without a cache every repetition, and every run, would build it again
inside its timed load. The cache lives in the work folder, one folder per key; the key is
everything the engine depends on: the model's sha256, the runtime and its version, the
provider and its options (less the cache's own), the device (GPU name and index) and, for
TensorRT, the TensorRT library's version (an engine runs only on the version that built it). A
folder counts as a hit once a worker has loaded from it and run the model once (the
``BUILT`` marker), so a build cut short (timeout, crash) is built again, not trusted.
"""

import hashlib
import json
import os
import subprocess
import sys
from typing import Dict, Tuple

from fleet_agent.protocol import OptionValue

# The providers that build something at load; their first load is an engine build.
ENGINE_PROVIDERS = ("tensorrt", "coreml")
BUILT = ".built"
# The options that say where the cache is or whether to use it: not part of the key.
_CACHE_OPTIONS = (
    "trt_engine_cache_enable",
    "trt_engine_cache_path",
    "trt_timing_cache_path",
    "ModelCacheDirectory",
)
# CoreML's ModelCacheDirectory came with the provider options API (onnxruntime 1.21).
_COREML_CACHE_SINCE = (1, 21)
# TensorRT's version, printed by a child process: loading libnvinfer in the worker would move
# its load time and memory out of the repetition's timed load and into its baseline. The
# Python module's version where it is installed, else the library's getInferLibVersion().
_TENSORRT_PROBE = """
import ctypes, ctypes.util
try:
    import tensorrt
    print(tensorrt.__version__)
except (ImportError, OSError):
    names = (ctypes.util.find_library("nvinfer"), "libnvinfer.so.10", "libnvinfer.so.8")
    for name in filter(None, names):
        try:
            print(ctypes.CDLL(name).getInferLibVersion())
            break
        except (OSError, AttributeError):
            continue
"""
_PROBE_TIMEOUT_S = 60.0


def key(
    sha256: str,
    runtime: str,
    version: str,
    provider: str,
    options: Dict[str, OptionValue],
    device: str,
    library: str,
) -> str:
    """The cache key: a sha256 of everything an engine depends on; ``library`` is the
    version of the library that builds it (``library_version``)."""
    kept = {k: v for k, v in options.items() if k not in _CACHE_OPTIONS}
    text = json.dumps([sha256, runtime, version, provider, kept, device, library], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def library_version(provider: str) -> str:
    """The version of the library that builds the provider's engines where it is not the
    runtime: TensorRT's for ``tensorrt`` ("" where it cannot be told), else ""."""
    if provider != "tensorrt":
        return ""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _TENSORRT_PROBE],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return tensorrt_version(done.stdout)


def tensorrt_version(printed: str) -> str:
    """The version the probe printed: the module's as it is ("10.3.0"), the library's
    number decoded (100300: 10.3.0; before TensorRT 9, 8601: 8.6.1); "" for nothing."""
    lines = printed.split()
    text = lines[-1] if lines else ""
    if not text.isdigit():
        return text
    number = int(text)
    major, rest = divmod(number, 10000 if number >= 10000 else 1000)
    return "{}.{}.{}".format(major, rest // 100, rest % 100)


def _version(text: str) -> Tuple[int, ...]:
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


class EngineCache:
    """One key's folder, and the options that point the provider at it."""

    def __init__(self, root: str, cache_key: str) -> None:
        self.folder = os.path.join(root, cache_key[:32])
        self.enabled = True  # False: the suite turned the provider's cache off
        self._built = os.path.isfile(os.path.join(self.folder, BUILT))

    @property
    def hit(self) -> bool:
        """Whether this load finds a built engine: the cache is on and one was built."""
        return self.enabled and self._built

    def options(
        self, provider: str, options: Dict[str, OptionValue], version: str
    ) -> Dict[str, OptionValue]:
        """``options`` with the cache turned on in this folder, unless they say otherwise:
        a suite that turns the engine cache off or names its own folder is obeyed."""
        result = dict(options)
        if provider == "tensorrt":
            self.enabled = not _off(result.get("trt_engine_cache_enable", True))
            if not self.enabled:
                return result
            result.setdefault("trt_engine_cache_enable", True)
            result.setdefault("trt_engine_cache_path", self.folder)
            if not _off(result.get("trt_timing_cache_enable", False)):
                result.setdefault("trt_timing_cache_path", self.folder)
        elif provider == "coreml":
            self.enabled = _version(version) >= _COREML_CACHE_SINCE
            if self.enabled:
                result.setdefault("ModelCacheDirectory", self.folder)
        return result

    def prepare(self) -> None:
        """Make the folder (the provider writes into it, it does not make it)."""
        os.makedirs(self.folder, exist_ok=True)

    def built(self) -> None:
        """The model loaded from this folder and ran: later loads are hits."""
        if not self.enabled:
            return
        with open(os.path.join(self.folder, BUILT), "w") as marker:
            marker.write("built\n")


def _off(value: OptionValue) -> bool:
    return str(value).strip().lower() in ("0", "false", "no", "off")
