"""Suite files: which models and variants to run, how to measure them, and the budgets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet import yamlfile
from fleet.artifacts.variant import Variant
from fleet.errors import ConfigError
from fleet.inventory import DEVICE_CLASSES

# Measurement settings the agent understands, with their defaults.
MEASURE_DEFAULTS: dict[str, float | int | str | list[int]] = {
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
    # ONNX Runtime: inter-op threads and graph optimisation (disable, basic, extended, all).
    "inter_op_threads": 1,
    "graph_optimization_level": "all",
    # LiteRT: the delegate library for a provider other than cpu/xnnpack/builtin.
    "delegate_path": "",
    # Validity limits (fleet_agent.aggregate).
    "cv_max": 0.5,
    "drift_max": 0.25,
    "repetition_cv_max": 0.05,
    "cpu_wait_max": 0.1,
    # Decoder language models (fleet_agent.generate).
    "context_tokens": [32, 96],
    "decode_tokens": 32,
    "generation_runs": 5,
}

# Settings where 0 makes no sense (0 runs, a batch of nothing, no time to finish).
POSITIVE = {"min_iterations", "repetitions", "threads", "batch", "timeout_s", "max_seconds"}

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

DECLARED_KEYS = ("family", "architecture", "base_model", "trained_on", "merged_from")
_MODEL_KEYS = {"name", "path", "dataset", "calibration", "variants", "budgets", *DECLARED_KEYS}
_SUITE_KEYS = {"name", "description", "measure", "budgets", "models", "classes"}


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
class Suite:
    name: str
    path: Path
    models: tuple[ModelSpec, ...]
    measure: Mapping[str, Any] = field(default_factory=dict)
    budgets: Mapping[str, float] = field(default_factory=dict)
    classes: Mapping[str, ClassOverride] = field(default_factory=dict)

    def measure_for(self, device_class: str) -> dict[str, Any]:
        override = self.classes.get(device_class, ClassOverride())
        return {**MEASURE_DEFAULTS, **self.measure, **override.measure}

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
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"{yamlfile.where(path, data, 'name')}: 'name' must be a non-empty string"
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
    raw_classes = _mapping(path, data, "classes")
    for cls, override in raw_classes.items():
        if cls not in DEVICE_CLASSES:
            raise ConfigError(
                f"{yamlfile.where(path, raw_classes, cls)}: unknown device class {cls!r};"
                f" expected one of {', '.join(DEVICE_CLASSES)}"
            )
        if not isinstance(override, dict):
            raise ConfigError(f"{yamlfile.where(path, raw_classes, cls)}: must be a mapping")
        _no_unknown(path, override, {"measure", "budgets"}, f"classes.{cls}")
        classes[cls] = ClassOverride(_measure(path, override), _budgets(path, override))
    return Suite(
        name=name,
        path=path,
        models=specs,
        measure=_measure(path, data),
        budgets=_budgets(path, data),
        classes=classes,
    )


def _model(path: Path, node: Any) -> ModelSpec:
    if not isinstance(node, dict):
        raise ConfigError(f"{yamlfile.where(path, node)}: each model must be a mapping")
    _no_unknown(path, node, _MODEL_KEYS, "model")
    for key in ("name", "path"):
        if not isinstance(node.get(key), str):
            raise ConfigError(f"{yamlfile.where(path, node, key)}: model needs '{key}' (a string)")
    raw = node.get("variants", ["onnx:fp32"])
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw) or not raw:
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
        name=node["name"],
        path=_file(path, node, "path"),
        variants=variants,
        dataset=_file(path, node, "dataset") if "dataset" in node else None,
        calibration=_file(path, node, "calibration") if "calibration" in node else None,
        declared={k: str(node[k]) for k in DECLARED_KEYS if k in node},
        budgets=_budgets(path, node),
        where=yamlfile.where(path, node),
    )


def _file(path: Path, node: dict[str, Any], key: str) -> Path:
    """Resolve a path relative to the suite file and check it exists."""
    value = node.get(key)
    if not isinstance(value, str):
        raise ConfigError(f"{yamlfile.where(path, node, key)}: '{key}' must be a file path")
    resolved = (path.parent / value).resolve()
    if not resolved.is_file():
        raise ConfigError(
            f"{yamlfile.where(path, node, key)}: {key} file {value!r} not found"
            f" (looked at {resolved}; paths are relative to the suite file)"
        )
    return resolved


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
        default = MEASURE_DEFAULTS[key]
        ok = (
            isinstance(value, str)
            if isinstance(default, str)
            else isinstance(value, list) and all(isinstance(v, int) and v > 0 for v in value)
            if isinstance(default, list)
            else isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
        )
        if isinstance(default, int) and not isinstance(default, bool) and ok:
            ok = isinstance(value, int)
        if key in POSITIVE and ok:
            ok = value > 0
        if not ok:
            expected = type(default).__name__ if not isinstance(default, list) else "list of int"
            sign = "positive" if key in POSITIVE else "non-negative"
            raise ConfigError(
                f"{yamlfile.where(path, measure, key)}: measure.{key} must be a"
                f" {sign} {expected}, not {value!r}"
            )
    return dict(measure)


def _budgets(path: Path, node: dict[str, Any]) -> dict[str, float]:
    budgets = _mapping(path, node, "budgets")
    _no_unknown(path, budgets, set(BUDGETS), "budgets")
    for key, value in budgets.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(
                f"{yamlfile.where(path, budgets, key)}: budget {key} must be a number,"
                f" not {value!r}"
            )
    return {k: float(v) for k, v in budgets.items()}


def _no_unknown(path: Path, node: dict[str, Any], known: set[str], what: str) -> None:
    for key in node:
        if key not in known:
            raise ConfigError(
                f"{yamlfile.where(path, node, key)}: unknown key {key!r} in {what};"
                f" expected one of {', '.join(sorted(known))}"
            )
