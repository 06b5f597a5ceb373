"""The plan: suite × devices × variants, expanded into the cases each device will run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fleet.artifacts.variant import Variant
from fleet.inventory import Device
from fleet.suite import ModelSpec, Suite
from fleet_agent.protocol import Settings, Task

RUNTIME_FOR_FORMAT = {"onnx": "onnxruntime", "tflite": "litert"}
# The variant every other one is compared with for accuracy drop and agreement.
REFERENCE = Variant("onnx", "fp32")

Key = tuple[str, str]  # (model name, variant as written in the suite): one conversion


@dataclass(frozen=True)
class Case:
    model: ModelSpec
    variant: Variant
    settings: Settings
    budgets: Mapping[str, float]

    @property
    def id(self) -> str:
        return f"{self.model.name}/{self.variant}"

    @property
    def key(self) -> Key:
        return (self.model.name, str(self.variant))

    @property
    def task(self) -> Task:
        # A decoder (declared in the suite) also gets time to first token and tokens/s.
        return "generate" if self.model.declared.get("architecture") == "decoder" else None

    @property
    def runtime(self) -> str:
        return RUNTIME_FOR_FORMAT[self.variant.format]

    @property
    def is_reference(self) -> bool:
        return self.variant == REFERENCE

    @property
    def has_reference(self) -> bool:
        return REFERENCE in self.model.variants and self.model.dataset is not None


@dataclass(frozen=True)
class DevicePlan:
    device: Device
    cases: tuple[Case, ...]


@dataclass(frozen=True)
class Plan:
    suite: Suite
    devices: tuple[DevicePlan, ...]

    def conversions(self) -> list[Case]:
        """One case per (model, variant): what has to be converted before the push."""
        seen: dict[Key, Case] = {}
        for device_plan in self.devices:
            for case in device_plan.cases:
                seen.setdefault(case.key, case)
        return list(seen.values())


def make_plan(suite: Suite, devices: Sequence[Device]) -> Plan:
    """Cases per device, the reference variant of each model first (others compare to it)."""
    plans = []
    for device in devices:
        cases = [
            Case(
                model,
                variant,
                suite.measure_for(device.device_class),
                suite.budgets_for(model, device.device_class),
            )
            for model in suite.models
            for variant in sorted(model.variants, key=lambda v: v != REFERENCE)
        ]
        plans.append(DevicePlan(device, tuple(cases)))
    return Plan(suite, tuple(plans))


def describe(plan: Plan) -> list[str]:
    """`fleet run --plan`: one line per device and case."""
    lines = []
    for device_plan in plan.devices:
        device = device_plan.device
        lines.append(f"{device.name} ({device.device_class}, {device.host})")
        for case in device_plan.cases:
            s = case.settings
            lines.append(
                f"  {case.id:32} {case.runtime}/{s['provider']} threads={s['threads']}"
                f" batch={s['batch']}"
            )
    return lines
