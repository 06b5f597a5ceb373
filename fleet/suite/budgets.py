"""`budgets:` — the limits a result must keep, named presets of them, and the judgement of a
result against them; and `regressions:`, how each series is judged against its history."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from fleet import yamlfile
from fleet.errors import ConfigError
from fleet.suite.nodes import in_range, mapping, no_unknown


class Budget(NamedTuple):
    field: str  # the result field it judges
    at_most: bool  # True: the field must stay at or below the budget; False: at or above


BUDGETS: dict[str, Budget] = {
    "p50_ms": Budget("latency_ms_p50", at_most=True),
    "p95_ms": Budget("latency_ms_p95", at_most=True),
    "p99_ms": Budget("latency_ms_p99", at_most=True),
    "peak_ram_mb": Budget("peak_rss_mb", at_most=True),
    "model_size_mb": Budget("model_size_mb", at_most=True),
    "accuracy_drop_pp": Budget("accuracy_drop_pp", at_most=True),
    "min_accuracy_top1": Budget("accuracy_top1", at_most=False),
    "min_throughput_ips": Budget("throughput_ips", at_most=False),
    # Fidelity against the FP32 variant on the same data, for what top-1 cannot judge
    # (embeddings, other tensors): mean cosine similarity, signal-to-noise ratio in dB, the
    # largest absolute difference of any output value.
    "min_cosine": Budget("cosine_mean", at_most=False),
    "min_snr_db": Budget("snr_db", at_most=False),
    "max_abs_error": Budget("max_abs_error", at_most=True),
}
# Budgets whose range is not "0 or more": a top-1 accuracy is a fraction; an accuracy drop
# may be negative (the variant must do better than FP32); a cosine is from -1 to 1.
BUDGET_LIMITS: dict[str, tuple[float, float]] = {
    "min_accuracy_top1": (0, 1),
    "accuracy_drop_pp": (-100, 100),
    "min_cosine": (-1, 1),
    "min_snr_db": (0, 1000),
}
# Named sets of budgets a suite, a class or a model can start from (`budgets: embedded`, or
# `budgets: {preset: embedded, p95_ms: 20}`). `embedded` is the glossary's embedded budget:
# a file under 100 MB (10^6 bytes, as the budget is quoted) that runs in under 1 GiB.
BUDGET_PRESETS: dict[str, dict[str, float]] = {
    "embedded": {"model_size_mb": 100.0, "peak_ram_mb": 1024.0},
}
PRESET_KEY = "preset"


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


def budgets(path: Path, node: dict[str, Any]) -> dict[str, float]:
    """The `budgets:` of a suite, class or model: a preset's name, or a mapping of budgets
    that may start from one (`preset:`); each budget within its range."""
    raw = node.get("budgets")
    if isinstance(raw, str):
        return dict(_preset(path, node, "budgets", raw))
    found = mapping(path, node, "budgets")
    no_unknown(path, found, {*BUDGETS, PRESET_KEY}, "budgets")
    start = _preset(path, found, PRESET_KEY, found[PRESET_KEY]) if PRESET_KEY in found else {}
    for key, value in found.items():
        if key == PRESET_KEY:
            continue
        low, high = BUDGET_LIMITS.get(key, (0, math.inf))
        if not in_range(value, low, high, whole=False):
            span = f"from {low:g} to {high:g}" if high < math.inf else f"of at least {low:g}"
            raise ConfigError(
                f"{yamlfile.where(path, found, key)}: budget {key} must be a number {span},"
                f" not {yamlfile.show(value)}"
            )
    return {**start, **{k: float(v) for k, v in found.items() if k != PRESET_KEY}}


def _preset(path: Path, node: dict[str, Any], key: str, value: object) -> Mapping[str, float]:
    if not isinstance(value, str) or value not in BUDGET_PRESETS:
        presets = ", ".join(
            f"{name} ({', '.join(f'{k} {v:g}' for k, v in limits.items())})"
            for name, limits in BUDGET_PRESETS.items()
        )
        raise ConfigError(
            f"{yamlfile.where(path, node, key)}: unknown budget preset {yamlfile.show(value)};"
            f" presets: {presets}, or write the budgets as a mapping"
        )
    return BUDGET_PRESETS[value]


# Metrics the regression check watches -> (the minimum effect that applies: `latency_pct`,
# `memory_pct` or `accuracy_pp`; True when a higher value is worse). Speeds (throughput,
# tokens/s) are judged with the latency effect: they are its inverse.
REGRESSION_METRICS: dict[str, tuple[str, bool]] = {
    "latency_ms_p50": ("latency_pct", True),
    "latency_ms_p95": ("latency_pct", True),
    "latency_ms_p99": ("latency_pct", True),
    "latency_ms_min": ("latency_pct", True),  # the device's own speed: interference only adds
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
    "confirm": (0, 5, True),
}
_REGRESSION_KEYS = {*REGRESSION_LIMITS, "gate", "metrics"}


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
    # Times a run measures the cases of its regressions again before one counts: a
    # regression that a rerun moments later does not show again (a host slow for a while,
    # not the model) is reported as not confirmed. 0: the first check decides.
    confirm: int = 0


def regressions(path: Path, node: dict[str, Any]) -> Regressions:
    rules = mapping(path, node, "regressions")
    no_unknown(path, rules, _REGRESSION_KEYS, "regressions")
    values: dict[str, Any] = {}
    for key, (low, high, whole) in REGRESSION_LIMITS.items():
        if key not in rules:
            continue
        if not in_range(rules[key], low, high, whole):
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
        values["metrics"] = _metrics(path, rules)
    if "window" not in values:  # a longer history alone widens the window with it
        values["window"] = max(Regressions.window, values.get("history", Regressions.history))
    found = Regressions(**values)
    if found.window < found.history:
        raise ConfigError(
            f"{yamlfile.where(path, rules, 'window')}: regressions.window ({found.window}) must"
            f" be at least regressions.history ({found.history}): the baseline is drawn from it"
        )
    return found


def _metrics(path: Path, rules: dict[str, Any]) -> tuple[str, ...]:
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
    return tuple(dict.fromkeys(metrics))
