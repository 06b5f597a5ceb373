"""One run out of the store as JSON (everything), CSV (one row per case) or JUnit XML (for CI)."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import asdict

from fleet.errors import ConfigError
from fleet.results.record import FINDINGS, TAG_KEYS, Record, settled, tag
from fleet.results.store import RunInfo, Store
from fleet.results.tables import when

# Shown in a JUnit test case's output, in this order, when present.
HEADLINE = ("latency_ms_p50", "latency_ms_p95", "throughput_ips", "peak_rss_mb", "accuracy_top1")


def export(store: Store, fmt: str, run_id: str | None = None) -> str:
    """The run `run_id` (a unique prefix will do; default: the latest) in format `fmt`."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    run = store.find_run(run_id)
    return FORMATS[fmt](run, store.records(run.run_id))


def to_json(run: RunInfo, records: list[Record]) -> str:
    document = {
        "run": asdict(run),
        "records": [
            {"measurement": r.measurement, "time_ns": r.time_ns, "tags": r.tags, "fields": r.fields}
            for r in records
        ],
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def to_csv(run: RunInfo, records: list[Record]) -> str:
    """Results only; a column per tag, then per field any result has."""
    results = [r for r in records if r.measurement == "result"]
    fields = sorted({name for r in results for name in r.fields} - {"run_id"})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["time_utc", "run_id", *TAG_KEYS, *fields])
    for r in results:
        values = [_csv_value(r.fields.get(name)) for name in fields]
        writer.writerow(
            [when(r.time_ns), run.run_id, *(r.tags.get(k, "") for k in TAG_KEYS), *values]
        )
    return out.getvalue()


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_junit(run: RunInfo, records: list[Record]) -> str:
    """A test suite per device, a test case per model variant; budgets decide pass/fail.
    Each regression or improvement the run's check found is a test case too: a gated
    regression fails, unless a rerun cleared it."""
    root = ET.Element("testsuites", name=f"fleet {run.suite}")
    standing = {id(r) for r in settled([r for r in records if r.measurement == "regression"])}
    by_device: dict[str, list[Record]] = {}
    for r in records:
        if r.measurement == "result" or id(r) in standing:
            by_device.setdefault(r.tags.get("device", "?"), []).append(r)
    for device, results in sorted(by_device.items()):
        suite = ET.SubElement(
            root, "testsuite", name=f"{run.suite}@{device}", hostname=device,
            timestamp=when(run.started_ns).replace(" ", "T"),
        )  # fmt: skip
        counts = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
        total_s = 0.0
        for r in results:
            counts["tests"] += 1
            judged = r.measurement == "regression"
            kind = _regression_case(suite, run, r) if judged else _junit_case(suite, run, r)
            if kind:
                counts[kind] += 1
            total_s += r.number("duration_s") or 0.0
        suite.attrib.update({k: str(v) for k, v in counts.items()}, time=f"{total_s:.3f}")
    for key in ("tests", "failures", "errors", "skipped"):
        root.set(key, str(sum(int(s.get(key, "0")) for s in root)))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _junit_case(suite: ET.Element, run: RunInfo, r: Record) -> str:
    """Add one test case; returns "failures", "errors", "skipped" or "" for a pass."""
    t = r.tags
    name = _series(t)
    case = ET.SubElement(
        suite, "testcase", classname=f"{run.suite}.{t.get('device', '?')}", name=name,
        time=f"{r.number('duration_s') or 0.0:.3f}",
    )  # fmt: skip
    numbers = [f"{k}={r.number(k):g}" for k in HEADLINE if r.number(k) is not None]
    if numbers:
        ET.SubElement(case, "system-out").text = " ".join(numbers)
    message = str(r.fields.get("message", ""))
    if r.status == "skipped":
        ET.SubElement(case, "skipped", message=message)
        return "skipped"
    if r.status in FINDINGS:
        ET.SubElement(case, "failure", type=r.status, message=message or r.status)
        return "failures"
    if r.status != "ok":
        kind = str(r.fields.get("error_kind", r.status))  # a failed device says what failed
        ET.SubElement(case, "error", type=kind, message=message or kind)
        return "errors"
    if r.fields.get("passed") is False:
        budgets = str(r.fields.get("budget_failures", "")) or "a budget was not met"
        ET.SubElement(case, "failure", type="budget", message=budgets)
        return "failures"
    return ""


def _regression_case(suite: ET.Element, run: RunInfo, r: Record) -> str:
    """A regression or improvement (measurement `regression`): "failures" when the run was
    gated on it, else a pass that says what changed (or, `cleared`, that a rerun did not)."""
    t = r.tags
    context = f" context={t['context_tokens']}" if "context_tokens" in t else ""
    name = f"{t.get('metric', '?')} of {_series(t)}{context}"
    direction = str(r.fields.get("direction", "regression"))
    case = ET.SubElement(
        suite, "testcase", classname=f"{run.suite}.{t.get('device', '?')}.{direction}",
        name=name, time="0.000",
    )  # fmt: skip
    message = str(r.fields.get("message", direction))
    if direction == "regression" and r.fields.get("gated") is True:
        ET.SubElement(case, "failure", type="regression", message=message)
        return "failures"
    gate = " (not gated)" if direction == "regression" else ""
    ET.SubElement(case, "system-out").text = f"{direction}{gate}: {message}"
    return ""


def _series(t: Mapping[str, str]) -> str:
    """digits_mlp onnx:int8-static onnxruntime/cpu batch=1 threads=1 (a chosen shape after
    the variant): a test case's name, the same for the same series every run."""
    shape = f" {t['shape']}" if "shape" in t else ""
    return (
        f"{t.get('model', '?')} {tag(t, 'variant') or '?'}{shape}"
        f" {t.get('runtime', '?')}/{t.get('provider', '?')} batch={t.get('batch', '?')}"
        f" threads={t.get('threads', '?')}"
    )


FORMATS: dict[str, Callable[[RunInfo, list[Record]], str]] = {
    "json": to_json,
    "csv": to_csv,
    "junit": to_junit,
}
