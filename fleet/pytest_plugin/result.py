"""What `fleet_device.run` returns: one stored result record as typed figures.

Every figure is a `Value`: a float (it compares and computes as one) that also knows which
device, case and run it came from and how uncertain it is, so that a failing
`assert result.latency.p95_ms < 20` says all of that (`explain`, through the plugin's
`pytest_assertrepr_compare`). A figure the device did not measure (no data set, a case that
timed out) is NaN: every comparison with it is false, and the message says why it is missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NAN = float("nan")
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


@dataclass(frozen=True)
class Origin:
    """Where a result came from: enough to find it again and to read a failure on its own."""

    device: str
    device_class: str
    host: str
    model: str
    variant: str
    runtime: str
    provider: str
    run_id: str
    store: str
    test: str
    fields: Mapping[str, object] = field(default_factory=dict, repr=False)

    @property
    def case(self) -> str:
        return f"{self.model} {self.variant}"

    def number(self, name: str) -> float | None:
        value = self.fields.get(name)
        return (
            float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )


class Value(float):
    """A measured figure: a float, plus its origin, unit and uncertainty."""

    label: str  # "latency p95"
    unit: str  # "ms"
    source: str  # the result field it came from, "latency_ms_p95"
    origin: Origin
    uncertainty: str  # how sure: an interval, the spread, the sample count
    missing: str  # why there is no number ("" when there is one)

    def __new__(
        cls,
        value: float | None,
        *,
        label: str,
        unit: str,
        source: str,
        origin: Origin,
        uncertainty: str = "",
        missing: str = "",
    ) -> Value:
        self = super().__new__(cls, NAN if value is None else value)
        self.label, self.unit, self.source, self.origin = label, unit, source, origin
        self.uncertainty = uncertainty
        self.missing = missing or ("not measured" if value is None else "")
        return self

    @property
    def measured(self) -> bool:
        return not math.isnan(self)

    def show(self) -> str:
        if not self.measured:
            return f"not measured ({self.missing})"
        return f"{float(self):.4g}{_unit(self.unit)}"

    def __repr__(self) -> str:
        return f"{self.show()} [{self.origin.device} {self.origin.case} {self.label}]"

    __str__ = show

    def __reduce__(self) -> tuple[Any, ...]:  # pickles (xdist, caches) as the plain number
        return (float, (float(self),))


def _unit(unit: str) -> str:
    return f" {unit}" if unit else ""


class BudgetFailures(list[str]):
    """The budgets a result broke, as stored ("p95_ms: 12.3 > 10"); `assert not
    result.budget_failures` then shows them with the device and case."""

    origin: Origin | None = None

    def __repr__(self) -> str:
        where = f"{self.origin.device} {self.origin.case}: " if self.origin else ""
        return f"{where}{'; '.join(self)}" if self else "no budget broken"


@dataclass(frozen=True)
class Latency:
    p50_ms: Value
    p90_ms: Value
    p95_ms: Value
    p99_ms: Value
    mean_ms: Value
    min_ms: Value
    max_ms: Value
    std_ms: Value
    cv: Value
    samples: int
    p50_ci95_ms: tuple[float, float] | None  # distribution-free 95 % interval of the p50


@dataclass(frozen=True)
class Memory:
    peak_rss_mb: Value  # the process's peak over the timed part, worst repetition
    peak_delta_mb: Value  # peak - baseline: the model's own cost
    baseline_mb: Value  # after the runtime import and the inputs
    after_load_mb: Value
    gpu_delta_mb: Value


@dataclass(frozen=True)
class Accuracy:
    top1: Value
    top5: Value
    drop_pp: Value  # FP32 ONNX top-1 minus this variant's, on the same device and data
    agreement_top1: Value  # share of samples where this variant's top-1 is FP32's
    cosine_min: Value
    cosine_mean: Value
    max_abs_error: Value
    samples: int


class _FromOrigin:
    """A result's device, model, variant or run id: read from where its figures came from."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, result: FleetResult | None, owner: type) -> str:
        if result is None:  # on the class itself: not a figure of any result
            raise AttributeError(self.name)
        return str(getattr(result.origin, self.name))


@dataclass(frozen=True)
class FleetResult:
    """One case on one device, as stored (`fields`, `tags`), with typed figures."""

    origin: Origin
    status: str  # ok; or skipped, timeout, out_of_memory, refused, invalid_model, error
    message: str
    valid: bool
    invalid_reasons: tuple[str, ...]
    passed: bool  # the budgets given with the case held
    budget_failures: BudgetFailures
    latency: Latency
    throughput_ips: Value
    memory: Memory
    accuracy: Accuracy
    load_ms: Value
    first_inference_ms: Value
    tags: Mapping[str, str]
    fields: Mapping[str, object]
    facts: Mapping[str, object]  # the device's sysinfo in this run
    reference: FleetResult | None = None  # the FP32 ONNX result of the same run, if it ran

    device = _FromOrigin()
    model = _FromOrigin()
    variant = _FromOrigin()
    run_id = _FromOrigin()

    def summary(self) -> dict[str, object]:
        """What goes into the JUnit report (`record_property`): the headline figures."""
        keep = (
            *("latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "throughput_ips"),
            *("peak_rss_mb", "accuracy_top1", "accuracy_drop_pp", "agreement_top1"),
        )
        figures = {k: self.fields[k] for k in keep if k in self.fields}
        return {
            "device": self.device,
            "model": self.model,
            "variant": self.variant,
            "run_id": self.run_id,
            "status": self.status,
            "valid": self.valid,
            **figures,
        }


def build_result(
    origin: Origin,
    tags: Mapping[str, str],
    fields: Mapping[str, object],
    facts: Mapping[str, object],
    reference: FleetResult | None = None,
) -> FleetResult:
    """The typed result of one stored `result` record."""
    status = str(fields.get("status", "ok"))
    message = str(fields.get("message", ""))
    missing = "" if status == "ok" else f"{status}: {message}" if message else status

    def value(name: str, label: str, unit: str, how: str = "", why: str = "") -> Value:
        number = origin.number(name)
        reason = why or missing or "not measured"
        return Value(
            number,
            label=label,
            unit=unit,
            source=name,
            origin=origin,
            uncertainty=how,
            missing="" if number is not None else reason,
        )

    spread = _latency_spread(origin)
    ci = _p50_interval(origin)
    mean = origin.number("latency_ms_mean")
    p50 = origin.number("latency_ms_p50")
    p50_how = spread
    if ci is not None and p50 is not None:
        half = max(ci[1] - p50, p50 - ci[0])
        p50_how = f"± {half:.3g} ms (95 % CI {ci[0]:.4g}–{ci[1]:.4g} ms); {spread}"
    latency = Latency(
        p50_ms=value("latency_ms_p50", "latency p50", "ms", p50_how),
        p90_ms=value("latency_ms_p90", "latency p90", "ms", spread),
        p95_ms=value("latency_ms_p95", "latency p95", "ms", spread),
        p99_ms=value("latency_ms_p99", "latency p99", "ms", spread),
        mean_ms=value("latency_ms_mean", "latency mean", "ms", spread),
        min_ms=value("latency_ms_min", "latency min", "ms", spread),
        max_ms=value("latency_ms_max", "latency max", "ms", spread),
        std_ms=value("latency_ms_std", "latency std", "ms", spread),
        cv=value("latency_cv", "latency CV", "", spread),
        samples=int(origin.number("iterations") or 0),
        p50_ci95_ms=ci,
    )
    throughput_how = f"batch × 1000 / mean latency ({mean:.4g} ms); {spread}" if mean else spread
    reps = int(origin.number("repetitions") or 0)
    memory_how = f"worst of {reps} repetition(s), each a fresh process" if reps else ""
    no_data = "" if "accuracy_top1" in fields or missing else "no data set given"
    accuracy = Accuracy(
        top1=value("accuracy_top1", "accuracy top-1", "", _binomial(origin), no_data),
        top5=value("accuracy_top5", "accuracy top-5", "", _samples(origin), no_data),
        drop_pp=value(
            "accuracy_drop_pp",
            "accuracy drop vs FP32",
            "pp",
            _drop(origin),
            no_data or _no_reference(origin),
        ),
        agreement_top1=value(
            "agreement_top1",
            "top-1 agreement with FP32",
            "",
            _samples(origin),
            no_data or _no_reference(origin),
        ),
        cosine_min=value(
            "cosine_min",
            "cosine to FP32 (min)",
            "",
            _samples(origin),
            no_data or _no_reference(origin),
        ),
        cosine_mean=value(
            "cosine_mean",
            "cosine to FP32 (mean)",
            "",
            _samples(origin),
            no_data or _no_reference(origin),
        ),
        max_abs_error=value(
            "max_abs_error",
            "max abs error vs FP32",
            "",
            _samples(origin),
            no_data or _no_reference(origin),
        ),
        samples=int(origin.number("accuracy_samples") or 0),
    )
    failures = BudgetFailures(s for s in str(fields.get("budget_failures", "")).split("; ") if s)
    failures.origin = origin
    reasons = tuple(r for r in str(fields.get("invalid_reasons", "")).split("; ") if r)
    return FleetResult(
        origin=origin,
        status=status,
        message=message,
        valid=fields.get("valid") is not False and status == "ok",
        invalid_reasons=reasons,
        passed=fields.get("passed") is not False,
        budget_failures=failures,
        latency=latency,
        throughput_ips=value("throughput_ips", "throughput", "inferences/s", throughput_how),
        memory=Memory(
            peak_rss_mb=value("peak_rss_mb", "peak RSS", "MB", memory_how),
            peak_delta_mb=value("peak_delta_mb", "peak RSS above baseline", "MB", memory_how),
            baseline_mb=value("rss_baseline_mb", "RSS baseline", "MB", memory_how),
            after_load_mb=value("rss_after_load_mb", "RSS after load", "MB", memory_how),
            gpu_delta_mb=value(
                "gpu_memory_delta_mb",
                "GPU memory delta",
                "MB",
                "",
                "no GPU provider with nvidia-smi",
            ),
        ),
        accuracy=accuracy,
        load_ms=value("load_ms", "load time", "ms", "median over repetitions"),
        first_inference_ms=value(
            "first_inference_ms", "first inference", "ms", "median over repetitions"
        ),
        tags=dict(tags),
        fields=dict(fields),
        facts=dict(facts),
        reference=reference,
    )


def _p50_interval(origin: Origin) -> tuple[float, float] | None:
    low = origin.number("latency_p50_ci95_low_ms")
    high = origin.number("latency_p50_ci95_high_ms")
    return (low, high) if low is not None and high is not None else None


def _latency_spread(origin: Origin) -> str:
    parts = []
    cv, n = origin.number("latency_cv"), origin.number("iterations")
    if cv is not None and n:
        parts.append(f"CV {cv:.3g} over {int(n):,} samples")
    reps, rep_cv = origin.fields.get("repetition_p50s_ms"), origin.number("repetition_p50_cv")
    if reps and "," in str(reps) and rep_cv is not None:  # more than one repetition
        parts.append(f"repetitions' p50s {reps} ms (CV {rep_cv:.3g})")
    return "; ".join(parts)


def _samples(origin: Origin) -> str:
    n = origin.number("accuracy_samples")
    return f"over {int(n):,} samples" if n else ""


def _binomial(origin: Origin) -> str:
    p, n = origin.number("accuracy_top1"), origin.number("accuracy_samples")
    if p is None or not n:
        return ""
    half = 1.96 * math.sqrt(max(p * (1 - p), 0.0) / n)
    return f"± {half:.3g} (95 %, binomial, {int(n):,} samples)"


def _drop(origin: Origin) -> str:
    p, n = origin.number("accuracy_top1"), origin.number("accuracy_samples")
    drop = origin.number("accuracy_drop_pp")
    if p is None or not n or drop is None:
        return ""
    fp32 = p + drop / 100
    # One sample changing its answer moves top-1 by 100/n pp: the resolution of the drop.
    step = 100 / n
    return f"FP32 top-1 {fp32:.4f}, this {p:.4f}, same {int(n):,} samples (1 sample: {step:.2g} pp)"


def _no_reference(origin: Origin) -> str:
    return "no FP32 ONNX reference in the same run (pass dataset= and let it run)"


def explain(op: str, left: object, right: object) -> list[str] | None:
    """The assertion message for a comparison that involves a Value; None otherwise."""
    if op not in _FLIPPED or not (isinstance(left, Value) or isinstance(right, Value)):
        return None
    if isinstance(left, Value):
        value, other, shown_op = left, right, op
    else:
        assert isinstance(right, Value)
        value, other, shown_op = right, left, _FLIPPED[op]
    o = value.origin
    limit = other.show() if isinstance(other, Value) else f"{other!r}{_unit(value.unit)}"
    head = f"{o.device}: {o.case} {value.label} = {value.show()}, not {shown_op} {limit}"
    lines = [
        head,
        f"device:  {o.device} (class {o.device_class}, {o.host})",
        f"case:    {o.case} ({o.runtime}/{o.provider})",
        f"value:   {value.label} {value.show()}"
        + (f"; {value.uncertainty}" if value.uncertainty and value.measured else ""),
        f"limit:   {shown_op} {limit}",
    ]
    if isinstance(other, Value):
        lines.append(f"other:   {other!r}; {other.uncertainty}")
    valid = o.fields.get("valid")
    if valid is False:
        lines.append(f"valid:   no: {o.fields.get('invalid_reasons', '')}")
    lines.append(f"stored:  run {o.run_id} in {o.store} (test {o.test})")
    return lines
