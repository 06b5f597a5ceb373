"""The `fleet_device` fixture's object: one selected device, as a test sees it.

A test's `fleet_device.run(...)` or `.run_case(...)` builds a one-device plan
(`fleet.plan.make_plan`) from a suite, runs it through the process's `FleetSession`
(`fleet.runner.run_suite`, the very path of `fleet run`: the same artifact cache, agent,
device lock, retries and waits) and returns the typed result of the case asked for, or
raises when there is none to trust (`InvalidResult`, `CaseFailed`, the device's error).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from fleet.errors import ConfigError, DeviceError
from fleet.inventory import Device
from fleet.plan import REFERENCE, make_plan
from fleet.pytest_plugin.options import check_measure
from fleet.pytest_plugin.result import FleetResult, Origin, build_result
from fleet.pytest_plugin.session import FleetSession, log
from fleet.results.record import Record
from fleet.suite import ClassOverride, Suite


class InvalidResult(AssertionError):
    """A result the agent marked not valid (noisy, throttled, too few samples), still not
    valid after `--fleet-retry-invalid` more runs: it is stored, but no test passes on it."""

    def __init__(self, message: str, result: FleetResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class CaseFailed(AssertionError):
    """The case has no measurement: it timed out, ran out of memory, its model did not load,
    or its conversion lost more accuracy than its budget allows (refused)."""

    def __init__(self, message: str, result: FleetResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class FleetDevice:
    """One selected device, as a test sees it (the `fleet_device` fixture)."""

    def __init__(
        self,
        session: FleetSession,
        name: str,
        *,
        test: str,
        test_path: Path,
        suite_name: str,
        record_property: Callable[[str, object], None],
    ) -> None:
        self._session = session
        self.device: Device = session.devices[name]
        self.name = name
        self.test = test
        self._folder = test_path.parent
        self._test_path = test_path
        self._suite_name = suite_name
        self._record_property = record_property
        self.results: list[FleetResult] = []  # every result this test got, in order

    def __repr__(self) -> str:
        return f"<fleet device {self.name} ({self.device_class})>"

    @property
    def device_class(self) -> str:
        return self.device.device_class

    @property
    def tags(self) -> tuple[str, ...]:
        return self.device.tags

    @property
    def groups(self) -> tuple[str, ...]:
        return self.device.groups

    @property
    def facts(self) -> Mapping[str, object]:
        """The device's facts: after a run on it, its agent's sysinfo (cpu_model, ram_total_mb,
        memory_limit_mb, temp_c, ...); before one, the pre-flight check's (python, machine,
        runtimes, free_mb, temperature_c, throttled)."""
        __tracebackhide__ = True
        return self._session.facts(self.name)

    def run(
        self,
        model: str | Path,
        variant: str = "onnx:fp32",
        *,
        dataset: str | Path | None = None,
        calibration: str | Path | None = None,
        reference: bool | None = None,
        budgets: Mapping[str, float] | None = None,
        name: str | None = None,
        **measure: Any,
    ) -> FleetResult:
        """Measure `model` (a path; relative to the test file) as `variant` on this device.

        With a `dataset`, accuracy is measured, and a variant other than FP32 ONNX runs after
        the FP32 ONNX reference in the same run (`reference=False` leaves it out), so its
        accuracy drop and agreement are there. `measure` takes any suite `measure:` setting
        (min_iterations=300, threads=2, ...); --fleet-measure wins over them.
        """
        from fleet.artifacts.variant import Variant

        __tracebackhide__ = True
        where = f"fleet_device.run in {self.test}"
        path = self._file(model, "model")
        target = Variant.parse(variant)
        with_reference = reference if reference is not None else dataset is not None
        variants = [str(target)]
        if with_reference and target != REFERENCE:
            variants.insert(0, str(REFERENCE))
        entry: dict[str, object] = {"name": name or path.stem, "path": str(path)}
        if dataset is not None:
            entry["dataset"] = str(self._file(dataset, "dataset"))
        if calibration is not None:
            entry["calibration"] = str(self._file(calibration, "calibration"))
        entry["variants"] = variants
        if budgets:
            entry["budgets"] = dict(budgets)
        settings = {**check_measure(measure, where), **self._session.options.measure}
        suite = self._session.suite(
            {"name": self._suite_name, "measure": settings, "models": [entry]}, where
        )
        return self._run(suite, suite.models[0].name, str(target))

    def run_case(
        self,
        suite_file: str | Path,
        model: str | None = None,
        variant: str | None = None,
        **measure: Any,
    ) -> FleetResult:
        """Run one case of a suite file (relative to the test file) on this device: its
        measure settings and budgets for this device's class, and its name, so the result
        joins that suite's series. The FP32 ONNX reference runs first when the suite has it
        and a data set, as in `fleet run`."""
        from fleet.suite import load_suite

        __tracebackhide__ = True
        where = f"fleet_device.run_case in {self.test}"
        suite = load_suite(self._file(suite_file, "suite"))
        models = {m.name: m for m in suite.models}
        if model is None and len(models) == 1:
            model = next(iter(models))
        if model not in models:
            raise ConfigError(f"{where}: say which model of {suite.path}: {', '.join(models)}")
        spec = models[model]
        specs = {str(v): v for v in spec.variants}
        if variant is None and len(specs) == 1:
            variant = next(iter(specs))
        if variant not in specs:
            raise ConfigError(f"{where}: {model} of {suite.path} has variants {', '.join(specs)}")
        target = specs[variant]
        with_reference = REFERENCE in spec.variants and spec.dataset is not None
        chosen = (REFERENCE, target) if with_reference and target != REFERENCE else (target,)
        cls = self.device_class
        override = suite.classes.get(cls, ClassOverride())
        settings = {**override.measure, **check_measure(measure, where)}
        settings.update(self._session.options.measure)
        suite = replace(
            suite,
            models=(replace(spec, variants=chosen),),
            classes={**suite.classes, cls: replace(override, measure=settings)},
        )
        return self._run(suite, spec.name, variant)

    def _run(self, suite: Suite, model: str, variant: str) -> FleetResult:
        __tracebackhide__ = True
        retries = self._session.options.retry_invalid
        plan = make_plan(suite, [self.device])
        for attempt in range(retries + 1):
            records = self._session.run(plan, self.test)
            result = self._pick(records, model, variant)
            self.results.append(result)
            self._record_property("fleet_result", json.dumps(result.summary(), sort_keys=True))
            both = [r for r in (result, result.reference) if r is not None]
            noisy = [r for r in both if r.status == "ok" and not r.valid]
            if not noisy or any(r.status not in ("ok", "skipped") for r in both):
                break
            if attempt < retries:
                log.warning(
                    "[%s] %s not valid, run again (%d of %d, --fleet-retry-invalid)",
                    self.name,
                    result.origin.case,
                    attempt + 1,
                    retries,
                )
        return self._judge(result)

    def _judge(self, result: FleetResult) -> FleetResult:
        import pytest

        __tracebackhide__ = True
        o = result.origin
        if result.status == "skipped":
            pytest.skip(f"{o.device}: {o.case} skipped: {result.message}")
        for r in (result.reference, result):  # a reference without its runtime: no drop, no more
            if r is not None and r.status not in ("ok", "skipped"):
                raise CaseFailed(
                    f"{r.device}: {r.origin.case} {r.status}: {r.message} (run {r.run_id})", r
                )
        for r in (result.reference, result):
            if r is not None and r.status == "ok" and not r.valid:
                retried = self._session.options.retry_invalid
                raise InvalidResult(
                    f"{r.device}: {r.origin.case} result is not valid (run {r.run_id}"
                    f"{f', after {retried} more run(s)' if retried else ''}):"
                    f" {'; '.join(r.invalid_reasons)} — stored, but not passed; retry with"
                    " --fleet-retry-invalid N, or quieten the device",
                    r,
                )
        return result

    def _pick(self, records: list[Record], model: str, variant: str) -> FleetResult:
        """The result of the variant asked for, with its reference's, from a run's records."""
        found: dict[tuple[str, str], Record] = {}
        facts: dict[str, object] = {}
        for record in records:
            if record.measurement == "result" and record.tags.get("model") == model:
                # the first of a shape sweep's results; the rest are in the store
                found.setdefault((record.tags["format"], record.tags["precision"]), record)
            elif record.measurement == "device":
                facts = {k: v for k, v in record.fields.items() if k not in ("run_id", "status")}
        from fleet.artifacts.variant import Variant

        target = Variant.parse(variant)
        ref_key = (REFERENCE.format, REFERENCE.precision)
        key = (target.format, target.precision)
        reference = None
        if key != ref_key and ref_key in found:
            reference = self._typed(found[ref_key], model, str(REFERENCE), facts)
        if key not in found:
            raise DeviceError(self.name, f"the run stored no result for {model} {variant}")
        return self._typed(found[key], model, variant, facts, reference)

    def _typed(
        self,
        record: Record,
        model: str,
        variant: str,
        facts: Mapping[str, object],
        reference: FleetResult | None = None,
    ) -> FleetResult:
        fields = {**record.fields, "test": self.test}
        origin = Origin(
            device=self.name,
            device_class=self.device_class,
            host=f"{self.device.host}:{self.device.port}",
            model=model,
            variant=variant,
            runtime=record.tags.get("runtime", "?"),
            provider=record.tags.get("provider", "?"),
            run_id=record.run_id,
            store=str(self._session.options.store_path),
            test=self.test,
            fields=fields,
        )
        return build_result(origin, record.tags, fields, facts, reference)

    def _file(self, value: str | Path, what: str) -> Path:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else self._folder / path
        if not path.is_file():
            raise ConfigError(
                f"fleet_device in {self.test}: {what} file {value} not found (looked at {path};"
                " a relative path is relative to the test file)"
            )
        return path.resolve()
