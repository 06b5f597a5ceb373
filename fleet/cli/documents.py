"""The JSON documents of `--json` listings that the library has no shape for (docs/cli.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleet.plan import Plan


def plan_document(plan: Plan) -> dict[str, Any]:
    """`fleet run --plan --json`: each device and its cases, every setting the agent gets."""
    devices = [
        {
            "name": dp.device.name,
            "class": dp.device.device_class,
            "host": dp.device.host,
            "port": dp.device.port,
            "cases": [
                {
                    "id": case.id,
                    "model": case.model.name,
                    "variant": str(case.variant),
                    "converted": case.series_variant,
                    "runtime": case.runtime,
                    "shapes": case.input_shapes,
                    "budgets": dict(case.budgets),
                    "settings": dict(case.settings),
                }
                for case in dp.cases
            ],
        }
        for dp in plan.devices
    ]
    cases = sum(len(dp.cases) for dp in plan.devices)
    return {"suite": plan.suite.name, "cases": cases, "devices": devices}
