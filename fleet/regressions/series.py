"""What a series is (a case on a device), the metrics judged in it, and the points a
record gives them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from fleet.results.record import SERIES_KEYS, Record, tag
from fleet.suite import REGRESSION_METRICS
from fleet_agent.stats import min_samples_for

# A series: one case identity (the store's SERIES_KEYS) in one suite on one device, plus
# `context_tokens` of a generation record; format and precision besides the variant, so that
# records stored before `variant` existed still match.
SERIES_TAGS = ("suite", "device", "format", "precision", *SERIES_KEYS)
GENERATION_METRICS = ("ttft_ms", "decode_tokens_per_s")
_Z975 = 1.959963984540054  # the agent's confidence intervals are 95 %


@dataclass(frozen=True)
class Metric:
    name: str
    effect: str  # the `regressions:` key of its minimum effect
    higher_is_worse: bool
    measurement: str = "result"
    min_samples: int = 0  # a percentile is judged only with enough samples for it
    ci: tuple[str, str] | None = None  # the agent's 95 % confidence interval of the value
    repetitions: str = ""  # the field listing each repetition's value, where the agent does

    @property
    def unit(self) -> str:
        for part, unit in (("_ms", " ms"), ("_mb", " MB"), ("tokens_per_s", " tokens/s")):
            if part in self.name:
                return unit
        return "/s" if self.name.endswith("_ips") else ""


_PERCENTILES = {"latency_ms_p95": 95.0, "latency_ms_p99": 99.0}
_REPETITIONS = {
    "latency_ms_p50": "repetition_p50s_ms",
    "latency_ms_p95": "repetition_p95s_ms",
    "latency_ms_p99": "repetition_p99s_ms",
    "throughput_ips": "repetition_throughputs_ips",
}
METRICS: dict[str, Metric] = {
    name: Metric(
        name,
        effect,
        worse,
        "generation" if name in GENERATION_METRICS else "result",
        min_samples_for(_PERCENTILES[name]) if name in _PERCENTILES else 0,
        ("latency_p50_ci95_low_ms", "latency_p50_ci95_high_ms")
        if name == "latency_ms_p50"
        else None,
        _REPETITIONS.get(name, ""),
    )
    for name, (effect, worse) in REGRESSION_METRICS.items()
}


@dataclass(frozen=True)
class Point:
    """One valid result of a series for one metric."""

    run_id: str
    time_ns: int
    value: float
    sigma: float = 0.0  # its own standard error, from the agent's confidence interval


def series_key(record: Record) -> tuple[str, ...]:
    # tag(): a record stored before the `variant` tag existed reads as format:precision.
    key = tuple(tag(record.tags, name) for name in SERIES_TAGS)
    return (*key, record.tags.get("context_tokens", ""))


def series_name(tags: Mapping[str, str]) -> str:
    """digits_cnn onnx:int8-static onnxruntime/cpu batch=1 threads=1 on local (context=32);
    a chosen shape follows the variant."""
    t = {k: tags.get(k, "?") for k in SERIES_TAGS}
    shape = f" {tags['shape']}" if "shape" in tags else ""
    name = (
        f"{t['model']} {tag(tags, 'variant') or '?'}{shape} {t['runtime']}/{t['provider']}"
        f" batch={t['batch']} threads={t['threads']}"
    )
    if "context_tokens" in tags:
        name += f" context={tags['context_tokens']}"
    if "provider_options" in tags:
        name += f" [{tags['provider_options']}]"
    return f"{name} on {t['device']}" + (f" GPU {tags['gpu']}" if "gpu" in tags else "")


def is_valid(record: Record) -> bool:
    """A result that may be judged and may become a baseline."""
    return record.status == "ok" and record.fields.get("valid") is True


def point(record: Record, metric: Metric) -> Point | None:
    """The record's value of the metric, or None when it has none to judge (not measured,
    not finite, or too few samples for the percentile)."""
    value = record.number(metric.name)
    if value is None or not math.isfinite(value):
        return None
    if metric.min_samples and (record.number("iterations") or 0.0) < metric.min_samples:
        return None
    sigma = _repetitions_se(record, metric.repetitions) if metric.repetitions else 0.0
    if metric.ci is not None:
        low, high = (record.number(name) for name in metric.ci)
        if low is not None and high is not None and high >= low:
            sigma = max((high - low) / (2 * _Z975), sigma)
    return Point(record.run_id, record.time_ns, value, sigma)


def _repetitions_se(record: Record, listing: str) -> float:
    """The standard error of a figure from its repetitions' values (each a fresh worker). The
    samples of one worker are not independent (a device slows for seconds at a time), so an
    interval over all samples can be far narrower than what a rerun would move by, and a
    night whose repetitions disagree is weak evidence of a change: the repetitions' spread
    says that honestly. 0 when fewer than two are known (records from before the agent
    listed them)."""
    listed = record.fields.get(listing)  # "0.61,0.83,0.62", as the agent writes it
    values = [float(v) for v in str(listed).split(",")] if listed else []
    if len(values) < 2:
        return 0.0
    mean = math.fsum(values) / len(values)
    variance = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return math.sqrt(variance / len(values))
