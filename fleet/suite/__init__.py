"""Suite files: which models and variants to run, at which shapes, how to measure them, and
the budgets.

The file is read here; its parts are checked where they are defined: `measure:` in
`settings`, `budgets:` and `regressions:` in `budgets`, `models:` in `models` (their shapes
and data sets in `shapes`). Every error is one line naming the file, the line and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from fleet import yamlfile
from fleet.errors import ConfigError
from fleet.inventory import DEVICE_CLASSES, Device
from fleet.suite.budgets import (
    BUDGET_LIMITS,
    BUDGET_PRESETS,
    BUDGETS,
    REGRESSION_LIMITS,
    REGRESSION_METRICS,
    Regressions,
    budgets,
    check_budgets,
    regressions,
)
from fleet.suite.models import DECLARED_KEYS, TASKS, ModelSpec, model
from fleet.suite.nodes import NAME, NAME_RULE, mapping, name, no_unknown
from fleet.suite.providers import LITERT_BUILTIN as LITERT_PROVIDERS
from fleet.suite.providers import Layer, resolve
from fleet.suite.settings import (
    GRAPH_LEVELS,
    LIMITS,
    MEASURE_DEFAULTS,
    RUNTIME_FOR_FORMAT,
    check_providers,
    measure,
)
from fleet.suite.shapes import Shape
from fleet_agent.protocol import OptionValue, Settings

__all__ = [
    "BUDGETS",
    "BUDGET_LIMITS",
    "BUDGET_PRESETS",
    "DECLARED_KEYS",
    "GRAPH_LEVELS",
    "LIMITS",
    "LITERT_PROVIDERS",
    "MEASURE_DEFAULTS",
    "NAME",
    "NAME_RULE",
    "REGRESSION_LIMITS",
    "REGRESSION_METRICS",
    "RUNTIME_FOR_FORMAT",
    "TASKS",
    "ClassOverride",
    "ModelSpec",
    "Regressions",
    "Shape",
    "Suite",
    "check_budgets",
    "load_suite",
]

MAX_DESCRIPTION = 1000
_SUITE_KEYS = {"name", "description", "measure", "budgets", "models", "classes", "regressions"}


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
    # None when the suite has no `regressions:` (the check then uses the defaults, ungated).
    regressions: Regressions | None = None

    def measure_for(
        self, device_class: str, runtime: str | None = None, device: Device | None = None
    ) -> Settings:
        """The settings of a case of `runtime` on a device of `device_class` (or on `device`,
        whose inventory may choose its provider and GPU): device beats class beats suite.
        Without a runtime, the provider's options are as written, unchecked."""
        override = self.classes.get(device_class, ClassOverride())
        # Every key is MEASURE_DEFAULTS's, each value checked against its default's type.
        settings = cast(Settings, {**MEASURE_DEFAULTS, **self.measure, **override.measure})
        layers = [self._layer(self.measure), self._layer(override.measure)]
        if device is not None:
            layers.append(device_layer(device))
        settings["provider"], options = resolve(runtime, settings["delegate_path"], layers)
        # Checked by `resolve` when a runtime is given: the runtime's own names and values.
        settings["provider_options"] = cast(dict[str, OptionValue], options)
        settings["gpu"] = device.gpu if device is not None else None
        return settings

    def _layer(self, node: Mapping[str, Any]) -> Layer:
        options = node.get("provider_options") or {}

        def where(key: str) -> str:
            if key == "provider":
                return yamlfile.where(self.path, node, key)
            return yamlfile.where(self.path, options, key)

        return Layer(node.get("provider"), options, where)

    def budgets_for(self, model: ModelSpec, device_class: str) -> dict[str, float]:
        override = self.classes.get(device_class, ClassOverride())
        return {**self.budgets, **override.budgets, **model.budgets}


def load_suite(path: Path) -> Suite:
    data = yamlfile.load(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a suite is a mapping with 'name' and 'models'")
    no_unknown(path, data, _SUITE_KEYS, "suite")
    suite_name = name(path, data, "name", "the suite name")
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
    classes: dict[str, ClassOverride] = {}
    raw_classes = mapping(path, data, "classes")
    for cls, override in raw_classes.items():
        if cls not in DEVICE_CLASSES:
            raise ConfigError(
                f"{yamlfile.where(path, raw_classes, cls)}: unknown device class"
                f" {yamlfile.show(cls)}; expected one of {', '.join(DEVICE_CLASSES)}"
            )
        if not isinstance(override, dict):
            raise ConfigError(f"{yamlfile.where(path, raw_classes, cls)}: must be a mapping")
        no_unknown(path, override, {"measure", "budgets"}, f"classes.{cls}")
        classes[cls] = ClassOverride(measure(path, override), budgets(path, override))
    settings = Suite(suite_name, path, (), measure(path, data), budgets(path, data), classes)
    # The batch each device class runs at: a shape in the suite leaves that axis to it.
    batches = {settings.measure_for(cls)["batch"] for cls in DEVICE_CLASSES}
    specs = tuple(model(path, m, batches) for m in models)
    names = [m.name for m in specs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"{yamlfile.where(path, models)}: model name {dup!r} appears twice")
    suite = Suite(
        name=suite_name,
        path=path,
        models=specs,
        measure=settings.measure,
        budgets=settings.budgets,
        classes=classes,
        regressions=regressions(path, data) if "regressions" in data else None,
    )
    formats = {variant.format for spec in specs for variant in spec.variants}
    check_providers(formats, suite.measure_for)
    return suite


def device_layer(device: Device) -> Layer:
    """A host's own provider and options (fleet_provider, fleet_provider_options)."""
    return Layer(
        device.provider,
        dict(device.provider_options),
        lambda key: device.provider_source if key == "provider" else device.options_source,
        "fleet_provider",
        f" of host {device.name!r}",
    )
