"""The plan: suite × devices × variants × shapes, expanded into the cases each device runs."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fleet.artifacts.cache import sha256_file
from fleet.artifacts.variant import Variant
from fleet.inventory import Device
from fleet.suite import RUNTIME_FOR_FORMAT, ModelSpec, Shape, Suite
from fleet.suite.providers import describe_options
from fleet_agent.protocol import InputSpec, Settings, Task

__all__ = ["RUNTIME_FOR_FORMAT", "Case", "DevicePlan", "Plan", "describe", "make_plan"]
# The variant every other one is compared with for accuracy drop and agreement.
REFERENCE = Variant("onnx", "fp32")

Key = tuple[str, str]  # (model name, variant as written in the suite): one conversion


@dataclass(frozen=True)
class Case:
    model: ModelSpec
    variant: Variant  # as the suite writes it
    settings: Settings
    budgets: Mapping[str, float]
    shape: Shape = field(default_factory=Shape)

    @property
    def id(self) -> str:
        label = f"@{self.shape.label}" if self.shape.label else ""
        return f"{self.model.name}/{self.variant}{label}"

    @property
    def series_variant(self) -> str:
        """The variant as converted ("onnx:int8-static"): what tells its series apart."""
        return self.model.series_variant(self.variant).spec()

    @property
    def input_shapes(self) -> str | None:
        """The shapes fed for timing ("input_ids=1x128,attention_mask=1x128")."""
        return self.shape.describe(self.settings["batch"]) if self.shape.inputs else None

    @property
    def shape_tag(self) -> str | None:
        """The shapes when the suite or the data set chose them (a model with open
        dimensions): part of the series. None when the model fixes them."""
        return self.input_shapes if self.shape.chosen else None

    def inputs(self, card_inputs: Sequence[InputSpec]) -> list[InputSpec]:
        """The converted file's inputs (names and types as its card says) with the shapes
        this case feeds, every dimension set (axis 0: the batch)."""
        dims = self.shape.dims(self.settings["batch"])
        if len(dims) != len(card_inputs):
            return list(card_inputs)
        by_order = list(dims.values())
        return [
            {
                "name": spec["name"],
                "shape": list(dims.get(spec["name"], by_order[index])),
                "dtype": spec["dtype"],
            }
            for index, spec in enumerate(card_inputs)
        ]

    @property
    def key(self) -> Key:
        return (self.model.name, str(self.variant))

    @property
    def task(self) -> Task:
        # A decoder language model also gets time to first token and tokens/s.
        return "generate" if self.model.generates else None

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
    """Cases per device: per model and shape, the reference variant first (the others
    compare with it). Each device's provider and options (its own, its class's or the
    suite's) are checked here, before anything is converted or sent."""
    plans = []
    for device in devices:
        cls = device.device_class
        by_runtime: dict[str, Settings] = {}
        cases = []
        for model in suite.models:
            for shape in model.shapes:
                for variant in sorted(model.variants, key=lambda v: v != REFERENCE):
                    runtime = RUNTIME_FOR_FORMAT[variant.format]
                    if runtime not in by_runtime:
                        by_runtime[runtime] = suite.measure_for(cls, runtime, device)
                    budgets = suite.budgets_for(model, cls)
                    cases.append(Case(model, variant, by_runtime[runtime], budgets, shape))
        plans.append(DevicePlan(device, tuple(cases)))
    return Plan(suite, tuple(plans))


def describe(plan: Plan) -> list[str]:
    """`fleet run --plan`: one line per device and case."""
    lines = []
    by_gpu: dict[tuple[str, int], list[str]] = {}
    for device_plan in plan.devices:
        device = device_plan.device
        if device.gpu is not None:
            by_gpu.setdefault((device.host, device.gpu), []).append(device.name)
    for device_plan in plan.devices:
        device = device_plan.device
        lines.append(f"{device.name} ({device.device_class}, {device.host})")
        others = [n for n in by_gpu.get((device.host, device.gpu or 0), []) if n != device.name]
        if device.gpu is not None and others:
            lines.append(
                f"  shares GPU {device.gpu} of {device.host} with {', '.join(others)}: the"
                " agent's lock on that GPU measures one device at a time"
            )
        for case in device_plan.cases:
            s = case.settings
            shapes = f" {case.input_shapes}" if case.shape.chosen else ""
            options = describe_options(s["provider_options"])
            gpu = f" gpu={s['gpu']}" if s["gpu"] is not None else ""
            lines.append(
                f"  {case.id:32} {case.runtime}/{s['provider']}"
                f"{f'[{options}]' if options else ''}{gpu} threads={s['threads']}"
                f" batch={s['batch']}{shapes}"
            )
    return lines


def dataset_on_device(workdir: str, dataset: Path) -> str:
    """Where a data set lies on a device: named by its sha256, so it is sent once."""
    version = dataset.stat()
    return f"{workdir}/cache/{_sha256_of(dataset, version.st_size, version.st_mtime_ns)}.npz"


@functools.lru_cache(maxsize=256)
def _sha256_of(path: Path, size: int, mtime_ns: int) -> str:
    """Computed once per version of the file, not once per device and attempt."""
    return sha256_file(path)
