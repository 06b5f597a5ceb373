"""Suite files: which models and variants to run, how to measure them, and the budgets."""

from __future__ import annotations

import errno
import math
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from fleet import yamlfile
from fleet.artifacts.data import inspect_npz
from fleet.artifacts.variant import Variant
from fleet.errors import ConfigError
from fleet.inventory import DEVICE_CLASSES
from fleet_agent.protocol import Settings
from fleet_agent.runtimes import ORT_PROVIDERS

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
}

_DEFAULTS: Mapping[str, object] = MEASURE_DEFAULTS  # read by a key from the suite file

# What a name that becomes part of a path may be: the reference variant's outputs on a
# device are `outputs/<run>/<model>.npy`, and the suite's name is kept with every run.
# Without '/', '..', quotes, spaces or shell characters no name can leave its folder.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"

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
ABOVE_ZERO = {"max_seconds", "timeout_s"}
MAX_CONTEXTS = 64

# The agent's providers (fleet_agent.runtimes): ONNX Runtime's by ORT_PROVIDERS; LiteRT's
# own are these, any other LiteRT provider is a delegate loaded from measure.delegate_path.
LITERT_PROVIDERS = ("cpu", "xnnpack", "builtin")
# fleet_agent.runtimes._ORT_LEVELS; tests/test_suite.py keeps the two the same.
GRAPH_LEVELS = ("disable", "basic", "extended", "all")

# Text that goes into model cards, results or paths stays short and on one line.
MAX_DECLARED = 200
MAX_DESCRIPTION = 1000
MAX_PATH = 4096
MAX_VARIANT = 32

# Budget name -> (result field, True when the field must stay at or below the budget).
BUDGETS: dict[str, tuple[str, bool]] = {
    "p50_ms": ("latency_ms_p50", True),
    "p95_ms": ("latency_ms_p95", True),
    "p99_ms": ("latency_ms_p99", True),
    "peak_ram_mb": ("peak_rss_mb", True),
    "model_size_mb": ("model_size_mb", True),
    "accuracy_drop_pp": ("accuracy_drop_pp", True),
    "min_accuracy_top1": ("accuracy_top1", False),
    "min_throughput_ips": ("throughput_ips", False),
}
# Budgets whose range is not "0 or more": a top-1 accuracy is a fraction; an accuracy drop
# may be negative (the variant must do better than FP32).
BUDGET_LIMITS: dict[str, tuple[float, float]] = {
    "min_accuracy_top1": (0, 1),
    "accuracy_drop_pp": (-100, 100),
}

# Metrics the regression check watches -> (the minimum effect that applies: `latency_pct`,
# `memory_pct` or `accuracy_pp`; True when a higher value is worse). Speeds (throughput,
# tokens/s) are judged with the latency effect: they are its inverse.
REGRESSION_METRICS: dict[str, tuple[str, bool]] = {
    "latency_ms_p50": ("latency_pct", True),
    "latency_ms_p95": ("latency_pct", True),
    "latency_ms_p99": ("latency_pct", True),
    "throughput_ips": ("latency_pct", False),
    "peak_rss_mb": ("memory_pct", True),
    "peak_delta_mb": ("memory_pct", True),
    "accuracy_top1": ("accuracy_pp", False),
    "agreement_top1": ("accuracy_pp", False),
    "cosine_mean": ("accuracy_pp", False),
    "ttft_ms": ("latency_pct", True),
    "decode_tokens_per_s": ("latency_pct", False),
}
# `regressions:` number keys -> (low, high, whole number).
REGRESSION_LIMITS: dict[str, tuple[float, float, bool]] = {
    "latency_pct": (0, 1000, False),
    "memory_pct": (0, 1000, False),
    "accuracy_pp": (0, 100, False),
    "history": (2, 1000, True),
    "window": (2, 1000, True),
}
_REGRESSION_KEYS = {*REGRESSION_LIMITS, "gate", "metrics"}

DECLARED_KEYS = ("family", "architecture", "base_model", "trained_on", "merged_from")
_MODEL_KEYS = {"name", "path", "dataset", "calibration", "variants", "budgets", *DECLARED_KEYS}
_SUITE_KEYS = {"name", "description", "measure", "budgets", "models", "classes", "regressions"}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path
    variants: tuple[Variant, ...] = (Variant("onnx", "fp32"),)
    dataset: Path | None = None
    calibration: Path | None = None
    declared: Mapping[str, str] = field(default_factory=dict)
    budgets: Mapping[str, float] = field(default_factory=dict)
    where: str = ""


@dataclass(frozen=True)
class ClassOverride:
    measure: Mapping[str, Any] = field(default_factory=dict)
    budgets: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Regressions:
    """How the regression check judges each series (docs/regressions.md): a change must be
    statistically significant and at least this large to be flagged."""

    latency_pct: float = 5.0  # latency and speed metrics, % of the baseline
    memory_pct: float = 10.0  # peak RAM and the model's own memory, %
    accuracy_pp: float = 0.5  # accuracy, agreement, cosine: percentage points
    history: int = 5  # valid results a series needs before it is judged
    window: int = 10  # the most recent valid results that form the baseline
    gate: bool = True  # a regression fails the run (exit 1)
    metrics: tuple[str, ...] = tuple(REGRESSION_METRICS)


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    models: tuple[ModelSpec, ...]
    measure: Mapping[str, Any] = field(default_factory=dict)
    budgets: Mapping[str, float] = field(default_factory=dict)
    classes: Mapping[str, ClassOverride] = field(default_factory=dict)
    # None when the suite has no `regressions:` (the check then uses the defaults, ungated).
    regressions: Regressions | None = None

    def measure_for(self, device_class: str) -> Settings:
        override = self.classes.get(device_class, ClassOverride())
        # Every key is MEASURE_DEFAULTS's, each value checked against its default's type.
        return cast(Settings, {**MEASURE_DEFAULTS, **self.measure, **override.measure})

    def budgets_for(self, model: ModelSpec, device_class: str) -> dict[str, float]:
        override = self.classes.get(device_class, ClassOverride())
        return {**self.budgets, **override.budgets, **model.budgets}


def check_budgets(fields: Mapping[str, object], budgets: Mapping[str, float]) -> list[str]:
    """The budgets a result breaks, as readable strings; empty when all hold."""
    broken = []
    for name, limit in sorted(budgets.items()):
        field_name, at_most = BUDGETS[name]
        value = fields.get(field_name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue  # not measured for this case (e.g. no data set): nothing to judge
        if (value > limit) if at_most else (value < limit):
            broken.append(f"{name}: {value:.4g} {'>' if at_most else '<'} {limit:g}")
    return broken


def load_suite(path: Path) -> Suite:
    data = yamlfile.load(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a suite is a mapping with 'name' and 'models'")
    _no_unknown(path, data, _SUITE_KEYS, "suite")
    name = _name(path, data, "name", "the suite name")
    description = data.get("description")
    if description is not None and (
        not isinstance(description, str) or len(description) > MAX_DESCRIPTION
    ):
        raise ConfigError(
            f"{yamlfile.where(path, data, 'description')}: 'description' must be text of at"
            f" most {MAX_DESCRIPTION} characters, not {yamlfile.show(description)}"
        )
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise ConfigError(
            f"{yamlfile.where(path, data, 'models')}: 'models' must be a non-empty list of models"
        )
    specs = tuple(_model(path, m) for m in models)
    names = [m.name for m in specs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"{yamlfile.where(path, models)}: model name {dup!r} appears twice")
    classes: dict[str, ClassOverride] = {}
    # Where each class's measure settings were written, to point at a bad combination.
    measure_nodes: dict[str, dict[str, Any]] = {}
    raw_classes = _mapping(path, data, "classes")
    for cls, override in raw_classes.items():
        if cls not in DEVICE_CLASSES:
            raise ConfigError(
                f"{yamlfile.where(path, raw_classes, cls)}: unknown device class"
                f" {yamlfile.show(cls)}; expected one of {', '.join(DEVICE_CLASSES)}"
            )
        if not isinstance(override, dict):
            raise ConfigError(f"{yamlfile.where(path, raw_classes, cls)}: must be a mapping")
        _no_unknown(path, override, {"measure", "budgets"}, f"classes.{cls}")
        classes[cls] = ClassOverride(_measure(path, override), _budgets(path, override))
        measure_nodes[cls] = _mapping(path, override, "measure")
    suite = Suite(
        name=name,
        path=path,
        models=specs,
        measure=_measure(path, data),
        budgets=_budgets(path, data),
        classes=classes,
        regressions=_regressions(path, data) if "regressions" in data else None,
    )
    _check_providers(path, suite, _mapping(path, data, "measure"), measure_nodes)
    return suite


def _model(path: Path, node: Any) -> ModelSpec:
    if not isinstance(node, dict):
        raise ConfigError(f"{yamlfile.where(path, node)}: each model must be a mapping")
    _no_unknown(path, node, _MODEL_KEYS, "model")
    name = _name(path, node, "name", "a model name")
    if not isinstance(node.get("path"), str):
        raise ConfigError(f"{yamlfile.where(path, node, 'path')}: model needs 'path' (a string)")
    raw = node.get("variants", ["onnx:fp32"])
    if (
        not isinstance(raw, list)
        or not raw
        or not all(isinstance(v, str) and len(v) <= MAX_VARIANT for v in raw)
    ):
        raise ConfigError(
            f"{yamlfile.where(path, node, 'variants')}: 'variants' must be a list like"
            " [onnx:fp32, tflite:int8]"
        )
    try:
        variants = tuple(Variant.parse(v) for v in raw)
    except ConfigError as exc:
        raise ConfigError(f"{yamlfile.where(path, node, 'variants')}: {exc}") from None
    if len(set(variants)) != len(variants):
        dup = next(v for v in variants if variants.count(v) > 1)
        raise ConfigError(f"{yamlfile.where(path, node, 'variants')}: variant {dup} appears twice")
    return ModelSpec(
        name=name,
        path=_file(path, node, "path"),
        variants=variants,
        dataset=_npz(path, node, "dataset") if "dataset" in node else None,
        calibration=_npz(path, node, "calibration") if "calibration" in node else None,
        declared=_declared(path, node),
        budgets=_budgets(path, node),
        where=yamlfile.where(path, node),
    )


def _name(path: Path, node: dict[str, Any], key: str, what: str) -> str:
    """A name that becomes part of a file name, here or on a device."""
    value = node.get(key)
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ConfigError(
            f"{yamlfile.where(path, node, key)}: {what} must be {NAME_RULE},"
            f" not {yamlfile.show(value)}"
        )
    return value


def _declared(path: Path, node: dict[str, Any]) -> dict[str, str]:
    """family, architecture...: one short line each, since they are copied into the card."""
    declared = {}
    for key in DECLARED_KEYS:
        if key not in node:
            continue
        value = node[key]
        text = str(value) if isinstance(value, str | int | float) else ""
        if isinstance(value, bool) or not yamlfile.is_line(text, MAX_DECLARED):
            raise ConfigError(
                f"{yamlfile.where(path, node, key)}: {key} must be one line of text of at most"
                f" {MAX_DECLARED} characters, not {yamlfile.show(value)}"
            )
        declared[key] = text
    return declared


def _file(path: Path, node: dict[str, Any], key: str) -> Path:
    """Resolve a path relative to the suite file and check it is a file."""
    value = node.get(key)
    where = yamlfile.where(path, node, key)
    if not yamlfile.is_line(value, MAX_PATH):
        raise ConfigError(
            f"{where}: '{key}' must be a file path (text without control characters),"
            f" not {yamlfile.show(value)}"
        )
    # realpath, not Path.resolve: that raises RuntimeError on a symlink loop.
    resolved = Path(os.path.realpath(path.parent / value))
    try:
        mode = resolved.stat().st_mode
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise ConfigError(
                f"{where}: {key} file {yamlfile.show(value)} not found"
                f" (looked at {resolved}; paths are relative to the suite file)"
            ) from None
        raise ConfigError(
            f"{where}: cannot read {key} file {yamlfile.show(value)} ({exc.strerror or exc})"
        ) from None
    if stat.S_ISDIR(mode):
        raise ConfigError(
            f"{where}: {key} {yamlfile.show(value)} is a folder, not a file ({resolved});"
            " name the file inside it"
        )
    if not stat.S_ISREG(mode):
        raise ConfigError(
            f"{where}: {key} {yamlfile.show(value)} is not a regular file ({resolved})"
        )
    return resolved


def _npz(path: Path, node: dict[str, Any], key: str) -> Path:
    """A data file: its headers are read now, so a file that is not a .npz, is cut short or
    is too large stops the suite here rather than after the conversions."""
    file = _file(path, node, key)
    try:
        inspect_npz(file)
    except ConfigError as exc:
        raise ConfigError(f"{yamlfile.where(path, node, key)}: {key} {exc}") from None
    return file


def _mapping(path: Path, node: dict[str, Any], key: str) -> dict[str, Any]:
    value = node.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{yamlfile.where(path, node, key)}: '{key}' must be a mapping")
    return value


def _measure(path: Path, node: dict[str, Any]) -> dict[str, Any]:
    measure = _mapping(path, node, "measure")
    _no_unknown(path, measure, set(MEASURE_DEFAULTS), "measure")
    for key, value in measure.items():
        problem = _setting_problem(key, value)
        if problem:
            raise ConfigError(
                f"{yamlfile.where(path, measure, key)}: measure.{key} must be {problem},"
                f" not {yamlfile.show(value)}"
            )
    return dict(measure)


def _setting_problem(key: str, value: object) -> str:
    """What `value` should have been for setting `key`; empty when it is fine."""
    default = _DEFAULTS[key]
    if key == "provider":
        ok = isinstance(value, str) and NAME.fullmatch(value) is not None
        return "" if ok else f"a provider name ({NAME_RULE})"
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
            and all(_in_range(v, low, high, whole=True) for v in value)
        )
        return "" if ok else f"a list of 1-{MAX_CONTEXTS} whole numbers from {low:,} to {high:,}"
    whole = isinstance(default, int)
    ok = _in_range(value, low, high, whole) and not (key in ABOVE_ZERO and value == 0)
    if ok:
        return ""
    if whole:
        return f"a whole number from {low:,} to {high:,}"
    return f"a number {'above' if key in ABOVE_ZERO else 'from'} {low:,} to {high:,}"


def _in_range(value: object, low: float, high: float, whole: bool) -> bool:
    """A number (not a bool, NaN or infinity) from low to high; an int when `whole`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and (whole or not math.isfinite(value)):
        return False
    return low <= value <= high


def _check_providers(
    path: Path,
    suite: Suite,
    measure: dict[str, Any],
    class_measure: Mapping[str, dict[str, Any]],
) -> None:
    """Each class's provider must exist for the runtimes its variants run on, so a typo is
    found now rather than as a skipped case on every device."""
    formats = {variant.format for model in suite.models for variant in model.variants}
    for cls in DEVICE_CLASSES:
        settings = suite.measure_for(cls)
        provider = settings["provider"]
        problem = ""
        if "onnx" in formats and provider not in ORT_PROVIDERS:
            problem = (
                f"the onnx variants need an ONNX Runtime provider: one of"
                f" {', '.join(ORT_PROVIDERS)}"
            )
        elif (
            "tflite" in formats
            and provider not in LITERT_PROVIDERS
            and not settings["delegate_path"]
        ):
            problem = (
                f"the tflite variants need a LiteRT provider: one of"
                f" {', '.join(LITERT_PROVIDERS)}, or a delegate with measure.delegate_path"
                " set to its library"
            )
        if problem:
            node = class_measure.get(cls, {})
            node = node if "provider" in node else measure
            raise ConfigError(
                f"{yamlfile.where(path, node, 'provider')}: measure.provider"
                f" {yamlfile.show(provider)} is not known; {problem}"
            )


def _budgets(path: Path, node: dict[str, Any]) -> dict[str, float]:
    budgets = _mapping(path, node, "budgets")
    _no_unknown(path, budgets, set(BUDGETS), "budgets")
    for key, value in budgets.items():
        low, high = BUDGET_LIMITS.get(key, (0, math.inf))
        if not _in_range(value, low, high, whole=False):
            span = f"from {low:g} to {high:g}" if high < math.inf else f"of at least {low:g}"
            raise ConfigError(
                f"{yamlfile.where(path, budgets, key)}: budget {key} must be a number {span},"
                f" not {yamlfile.show(value)}"
            )
    return {k: float(v) for k, v in budgets.items()}


def _regressions(path: Path, node: dict[str, Any]) -> Regressions:
    rules = _mapping(path, node, "regressions")
    _no_unknown(path, rules, _REGRESSION_KEYS, "regressions")
    values: dict[str, Any] = {}
    for key, (low, high, whole) in REGRESSION_LIMITS.items():
        if key not in rules:
            continue
        if not _in_range(rules[key], low, high, whole):
            kind = "a whole number" if whole else "a number"
            raise ConfigError(
                f"{yamlfile.where(path, rules, key)}: regressions.{key} must be {kind} from"
                f" {low:g} to {high:g}, not {yamlfile.show(rules[key])}"
            )
        values[key] = rules[key] if whole else float(rules[key])
    if "gate" in rules:
        if not isinstance(rules["gate"], bool):
            raise ConfigError(
                f"{yamlfile.where(path, rules, 'gate')}: regressions.gate must be true or false,"
                f" not {yamlfile.show(rules['gate'])}"
            )
        values["gate"] = rules["gate"]
    if "metrics" in rules:
        metrics = rules["metrics"]
        where = yamlfile.where(path, rules, "metrics")
        if not isinstance(metrics, list) or not metrics:
            raise ConfigError(
                f"{where}: regressions.metrics must be a non-empty list of metrics, such as"
                f" [latency_ms_p50, peak_rss_mb], not {yamlfile.show(metrics)}"
            )
        for metric in metrics:
            if not isinstance(metric, str) or metric not in REGRESSION_METRICS:
                raise ConfigError(
                    f"{where}: unknown metric {yamlfile.show(metric)} in regressions.metrics;"
                    f" expected one of {', '.join(REGRESSION_METRICS)}"
                )
        values["metrics"] = tuple(dict.fromkeys(metrics))
    if "window" not in values:  # a longer history alone widens the window with it
        values["window"] = max(Regressions.window, values.get("history", Regressions.history))
    found = Regressions(**values)
    if found.window < found.history:
        raise ConfigError(
            f"{yamlfile.where(path, rules, 'window')}: regressions.window ({found.window}) must"
            f" be at least regressions.history ({found.history}): the baseline is drawn from it"
        )
    return found


def _no_unknown(path: Path, node: dict[str, Any], known: set[str], what: str) -> None:
    for key in node:
        if key not in known:
            raise ConfigError(
                f"{yamlfile.where(path, node, key)}: unknown key {yamlfile.show(key)} in {what};"
                f" expected one of {', '.join(sorted(known))}"
            )
