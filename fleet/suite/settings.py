"""`measure:` — how a case is measured: every setting with its default and its range, and
the check that a class's provider exists for the runtimes its variants run on."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from fleet import yamlfile
from fleet.errors import ConfigError
from fleet.inventory import DEVICE_CLASSES
from fleet.suite.nodes import MAX_PATH, NAME, NAME_RULE, in_range, mapping, no_unknown
from fleet_agent.protocol import Settings

# Every measurement setting, with its default: the one source of them (the agent has none).
MEASURE_DEFAULTS: Settings = {
    "warmup_iterations": 10,
    "warmup_seconds": 0.0,
    "min_iterations": 100,
    "min_seconds": 0.0,
    "max_seconds": 60.0,
    "repetitions": 3,
    "threads": 1,
    "batch": 1,
    "provider": "cpu",
    "timeout_s": 300.0,
    "seed": 0,
    "inter_op_threads": 1,
    "graph_optimization_level": "all",
    "delegate_path": "",
    "cv_max": 0.5,
    "drift_max": 0.25,
    "repetition_cv_max": 0.05,
    "cpu_wait_max": 0.1,
    "context_tokens": [32, 96],
    "decode_tokens": 32,
    "generation_runs": 5,
    "provider_options": {},
    "gpu": None,
    "load_timeout_s": 1800.0,
}

_DEFAULTS: Mapping[str, object] = MEASURE_DEFAULTS  # read by a key from the suite file

DAY_S = 86_400
# Each number setting's range (context_tokens: of each entry): wider than any real use,
# narrow enough that a typo stops here (threads: 1e20 once reached the device as a pybind11
# overflow, max_seconds: 1e308 as "must be a positive float").
LIMITS: dict[str, tuple[int, int]] = {
    "warmup_iterations": (0, 10_000_000),
    "warmup_seconds": (0, DAY_S),
    "min_iterations": (1, 10_000_000),
    "min_seconds": (0, DAY_S),
    "max_seconds": (0, DAY_S),
    "repetitions": (1, 1000),
    "threads": (1, 1024),
    "batch": (1, 65_536),
    "timeout_s": (0, DAY_S),
    "load_timeout_s": (0, DAY_S),
    "seed": (0, 2**32 - 1),
    "inter_op_threads": (0, 1024),
    "cv_max": (0, 1000),
    "drift_max": (0, 1000),
    "repetition_cv_max": (0, 1000),
    "cpu_wait_max": (0, 1000),
    "context_tokens": (1, 1_048_576),
    "decode_tokens": (1, 1_048_576),
    "generation_runs": (1, 1000),
}
# Seconds where 0 makes no sense (no time to measure, no time to finish).
ABOVE_ZERO = {"max_seconds", "timeout_s", "load_timeout_s"}
MAX_CONTEXTS = 64

# The runtime that runs each format's variants (fleet.plan's cases use it too).
RUNTIME_FOR_FORMAT = {"onnx": "onnxruntime", "tflite": "litert"}
# fleet_agent.runtimes._ORT_LEVELS; tests/test_suite.py keeps the two the same.
GRAPH_LEVELS = ("disable", "basic", "extended", "all")


def measure(path: Path, node: dict[str, Any]) -> dict[str, Any]:
    """The `measure:` mapping of a suite or a class, each setting checked."""
    settings = mapping(path, node, "measure")
    no_unknown(path, settings, set(MEASURE_DEFAULTS), "measure")
    for key, value in settings.items():
        problem = setting_problem(key, value)
        if problem:
            raise ConfigError(
                f"{yamlfile.where(path, settings, key)}: measure.{key} must be {problem},"
                f" not {yamlfile.show(value)}"
            )
    return settings  # as read, so that a provider's errors can name its line


def setting_problem(key: str, value: object) -> str:
    """What `value` should have been for setting `key`; empty when it is fine."""
    default = _DEFAULTS[key]
    if key == "provider":
        ok = isinstance(value, str) and NAME.fullmatch(value) is not None
        return "" if ok else f"a provider name ({NAME_RULE})"
    if key == "provider_options":  # each option is checked with its provider (providers.py)
        ok = isinstance(value, dict) and all(isinstance(k, str) for k in value)
        return "" if ok else "a mapping of option: value"
    if key == "gpu":
        return "left to the inventory (host var fleet_gpu: which GPU of the host a device is)"
    if key == "graph_optimization_level":
        return "" if value in GRAPH_LEVELS else f"one of {', '.join(GRAPH_LEVELS)}"
    if isinstance(default, str):  # delegate_path: a library on the device
        ok = value == "" or yamlfile.is_line(value, MAX_PATH)
        return "" if ok else "a path (text without control characters)"
    low, high = LIMITS[key]
    if isinstance(default, list):
        ok = (
            isinstance(value, list)
            and 0 < len(value) <= MAX_CONTEXTS
            and all(in_range(v, low, high, whole=True) for v in value)
        )
        return "" if ok else f"a list of 1-{MAX_CONTEXTS} whole numbers from {low:,} to {high:,}"
    whole = isinstance(default, int)
    ok = in_range(value, low, high, whole) and not (key in ABOVE_ZERO and value == 0)
    if ok:
        return ""
    if whole:
        return f"a whole number from {low:,} to {high:,}"
    return f"a number {'above' if key in ABOVE_ZERO else 'from'} {low:,} to {high:,}"


def check_providers(formats: Iterable[str], measure_for: Callable[[str, str], Settings]) -> None:
    """Each class's provider must exist for the runtimes its variants run on (`formats`),
    with options that provider takes, so a typo is found now rather than as a skipped case on
    every device (`measure_for` raises the error, naming the line that set it)."""
    runtimes = sorted({RUNTIME_FOR_FORMAT[f] for f in formats})
    for cls in DEVICE_CLASSES:
        for runtime in runtimes:
            measure_for(cls, runtime)
