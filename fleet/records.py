"""Records from what a device sends: pure functions of the agent's events and the plan.

The runner calls these as events arrive and stores each record at once; tests call them
directly (no lab needed) to build the records a run would store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fleet.artifacts import Artifact
from fleet.inventory import Device
from fleet.plan import Case, dataset_on_device
from fleet.results.record import Record, make_record
from fleet.suite import check_budgets
from fleet.suite.providers import describe_options
from fleet_agent import protocol


@dataclass
class DeviceContext:
    """What every record of one device in one run carries; filled in as the agent talks."""

    suite: str
    run_id: str
    device: Device
    agent_version: str = ""
    facts: Mapping[str, protocol.Fact] = field(default_factory=dict)
    # FP32 accuracy per model on this device: the other variants' accuracy drop is against it.
    reference_accuracy: dict[str, float] = field(default_factory=dict)
    # (runtime, provider asked for) -> the provider that ran, from this device's results: a
    # case that failed is shown under it too (ONNX Runtime may fall back from CUDA to CPU).
    providers: dict[tuple[str, str], str] = field(default_factory=dict)


def tags(ctx: DeviceContext, case: Case | None = None) -> dict[str, str]:
    """The device's tags, and the case's when there is one: what identifies its series.

    `variant` is the variant as converted (`onnx:int8-static`: two int8 modes are two
    series); `shape` the input shapes when the suite or the data set chose them; `provider`
    the one that runs, as far as it is known before a result says, `provider_options` its
    options and `gpu` the GPU of the host, where set."""
    found = {
        "suite": ctx.suite,
        "device": ctx.device.name,
        "device_class": ctx.device.device_class,
        "arch": str(ctx.facts.get("arch", "unknown")),
        "os": str(ctx.facts.get("os", "unknown")),
    }
    if case is not None:
        asked = (case.runtime, case.settings["provider"])
        found.update(
            model=case.model.name,
            format=case.variant.format,
            precision=case.variant.precision,
            variant=case.series_variant,
            runtime=case.runtime,
            provider=ctx.providers.get(asked, protocol.provider_that_runs(*asked)),
            batch=str(case.settings["batch"]),
            threads=str(case.settings["threads"]),
        )
        if case.shape_tag is not None:
            found["shape"] = case.shape_tag
        # Only where set, so that a CPU series keeps the key it had before these tags.
        options = describe_options(case.settings["provider_options"])
        if options:
            found["provider_options"] = options
        if case.settings["gpu"] is not None:
            found["gpu"] = str(case.settings["gpu"])
    return found


def device_record(ctx: DeviceContext) -> Record:
    """The device's facts in this run (sysinfo)."""
    fields: dict[str, object] = {"run_id": ctx.run_id, "status": "ok"}
    for key, value in ctx.facts.items():
        # "unavailable" is left out: a field must keep one type across devices and runs;
        # arch and os are tags already.
        if key in ("arch", "os") or value is None or value == "unavailable":
            continue
        fields[key] = value
    return make_record("device", tags(ctx), fields)


def _artifact_fields(
    ctx: DeviceContext, case: Case, artifact: Artifact | None
) -> dict[str, object]:
    fields: dict[str, object] = {"run_id": ctx.run_id, "agent_version": ctx.agent_version}
    if artifact is not None:  # None: the variant could not be converted
        fields.update(
            model_sha256=artifact.sha256,
            model_size_mb=artifact.card.model_size_mb,
            params=artifact.card.params,
        )
    fields["input_shapes"] = case.input_shapes
    return fields


def _for_user(ctx: DeviceContext, case: Case, text: str) -> str:
    """An agent's message names the data set by its copy on the device; the user knows the
    file the suite names."""
    dataset = case.model.dataset
    if dataset is None:
        return text
    try:
        on_device = dataset_on_device(ctx.device.workdir, dataset)
    except OSError:  # gone since the job was built: the device's name is all there is
        return text
    return text.replace(on_device, str(dataset))


def refused_record(ctx: DeviceContext, case: Case, artifact: Artifact, reason: str) -> Record:
    """A variant whose conversion lost more than its budget: decided before device time."""
    fields = _artifact_fields(ctx, case, artifact)
    fields.update(status="refused", message=reason, passed=False)
    return make_record("result", tags(ctx, case), fields)


def error_record(
    ctx: DeviceContext, case: Case, artifact: Artifact, event: protocol.CaseError
) -> Record:
    """A case the agent could not measure; a skipped case (no runtime here) judges nothing."""
    fields = _artifact_fields(ctx, case, artifact)
    fields.update(status=event["kind"], message=_for_user(ctx, case, event["message"]))
    if event["kind"] != "skipped":  # every failed case carries its kind, as device errors do
        fields.update(passed=False, error_kind=event["kind"])
    return make_record("result", tags(ctx, case), fields)


def failed_record(
    ctx: DeviceContext, case: Case, artifact: Artifact | None, kind: str, message: str
) -> Record:
    """A case its device never finished: unreachable, connection lost, hung, interrupted...;
    or one with no artifact to run (kind `conversion`: its variant could not be made)."""
    fields = _artifact_fields(ctx, case, artifact)
    fields.update(status="error", error_kind=kind, message=message, passed=False)
    return make_record("result", tags(ctx, case), fields)


def result_record(
    ctx: DeviceContext, case: Case, artifact: Artifact, event: protocol.Result
) -> Record:
    """A measured case, judged against its budgets. The reference variant's accuracy is
    remembered in ``ctx`` for the variants after it (the plan puts it first)."""
    fields = _artifact_fields(ctx, case, artifact)
    measured = {k: v for k, v in event["fields"].items() if _finite(v)}
    fields.update(measured, status="ok")
    problem = measured.get("accuracy_error")
    if isinstance(problem, str):
        fields["accuracy_error"] = _for_user(ctx, case, problem)
    accuracy = measured.get("accuracy_top1")
    if case.is_reference and isinstance(accuracy, float):
        ctx.reference_accuracy[case.model.name] = accuracy
    elif isinstance(accuracy, float) and case.model.name in ctx.reference_accuracy:
        fields["accuracy_drop_pp"] = (ctx.reference_accuracy[case.model.name] - accuracy) * 100
    broken = check_budgets(fields, case.budgets)
    if case.model.dataset is not None and "accuracy_samples" not in measured:
        # The latency stands; the data set the suite asked to score it on was not.
        broken.append(f"accuracy: not scored ({fields.get('accuracy_error', 'no reason given')})")
    fields.update(passed=not broken, budget_failures="; ".join(broken))
    # The runtime and provider that actually ran (a provider can fall back).
    ctx.providers[(case.runtime, case.settings["provider"])] = event["tags"]["provider"]
    return make_record("result", {**tags(ctx, case), **event["tags"]}, fields)


def generation_records(result: Record, entries: Sequence[protocol.GenerationEntry]) -> list[Record]:
    """A decoder's figures, one record per context length: the result's tags plus the length."""
    kept = ("run_id", "model_sha256", "agent_version", "runtime_version", "valid", "status")
    base = {k: result.fields[k] for k in kept if k in result.fields}
    records = []
    for entry in entries:
        length = str(int(entry["context_tokens"]))
        # context_tokens is a tag: the same name as a field would clash in InfluxDB.
        values: Mapping[str, float] = entry  # type: ignore[assignment]  # every value a float
        figures = {k: v for k, v in values.items() if k != "context_tokens" and _finite(v)}
        tags_ = {**result.tags, "context_tokens": length}
        records.append(make_record("generation", tags_, {**base, **figures}))
    return records


def retry_record(ctx: DeviceContext, kind: str, message: str) -> Record:
    """A device attempt that failed before any case began, and was tried again (or waited
    for, when busy): the run went on, but the dashboards should see a flaky device."""
    fields = {"run_id": ctx.run_id, "error_kind": kind, "message": message}
    return make_record("retry", tags(ctx), fields)


def run_record(
    suite: str,
    run_id: str,
    devices: Sequence[str],
    results: int,
    failed: int,
    exit_code: int,
    duration_s: float,
) -> Record:
    """The run's summary, for the run list and the dashboards' annotations."""
    fields = {
        "run_id": run_id,
        "exit_code": exit_code,
        "results": results,
        "failed": failed,
        "devices": ",".join(devices),
        "duration_s": duration_s,
    }
    return make_record("run", {"suite": suite}, fields)


def _finite(value: object) -> bool:
    return not isinstance(value, float) or math.isfinite(value)
