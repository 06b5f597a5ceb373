"""A suite's `models:` entry: the file, its variants, its task, what is declared about it, its
data, and the shapes it is timed at (fleet.suite.shapes)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fleet import yamlfile
from fleet.artifacts.variant import DEFAULT_BLOCK_SIZE, Variant
from fleet.errors import ConfigError
from fleet.suite.budgets import budgets
from fleet.suite.nodes import file, name, no_unknown
from fleet.suite.shapes import (
    Shape,
    check_converted_shapes,
    data_file,
    feed_dims,
    model_inputs,
    shapes,
)
from fleet_agent.datasets import Header
from fleet_agent.protocol import InputSpec

# Text that goes into model cards, results or paths stays short and on one line.
MAX_DECLARED = 200
MAX_VARIANT = 32

DECLARED_KEYS = ("family", "architecture", "base_model", "trained_on", "merged_from")
# What a model's outputs are, which decides how a variant's fidelity is judged: top-1 for a
# classifier, cosine for an embedding, error and SNR for other tensors; `generation` (a
# decoder language model) is also timed per context length.
TASKS = ("classification", "embedding", "tensor", "generation")
_SHAPE_KEYS = {"shapes", "sequence_lengths"}
_MODEL_KEYS = {
    "name",
    "path",
    "dataset",
    "calibration",
    "variants",
    "budgets",
    "task",
    *_SHAPE_KEYS,
    *DECLARED_KEYS,
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path
    variants: tuple[Variant, ...] = (Variant("onnx", "fp32"),)
    dataset: Path | None = None
    calibration: Path | None = None
    declared: Mapping[str, str] = field(default_factory=dict)
    budgets: Mapping[str, float] = field(default_factory=dict)
    where: str = ""
    # As the suite declares it; None: what fleet did before tasks were declared (a decoder
    # generates; fleet.artifacts.fidelity infers the rest from the outputs and the data).
    task: str | None = None
    # The source model's inputs, and the shapes its cases are timed at (one per sweep
    # length). No inputs: the model was not read, its cases feed the converted file's own.
    inputs: tuple[InputSpec, ...] = ()
    shapes: tuple[Shape, ...] = (Shape(),)

    @property
    def generates(self) -> bool:
        """A decoder language model: also timed per context length."""
        if self.task is None:
            return self.declared.get("architecture") == "decoder"
        return self.task == "generation"

    def series_variant(self, variant: Variant) -> Variant:
        """The variant as converted, as fleet.artifacts.convert decides it: int8 without a
        mode is static when the model has calibration data, dynamic otherwise; int4 without
        a block size takes the default one."""
        if variant.precision == "int8" and variant.mode is None:
            return replace(variant, mode="static" if self.calibration else "dynamic")
        if variant.precision == "int4" and variant.block_size is None:
            return replace(variant, block_size=DEFAULT_BLOCK_SIZE)
        return variant


def model(path: Path, node: Any, batches: set[int]) -> ModelSpec:
    """One `models:` entry; `batches` are measure.batch's values over the device classes."""
    if not isinstance(node, dict):
        raise ConfigError(f"{yamlfile.where(path, node)}: each model must be a mapping")
    no_unknown(path, node, _MODEL_KEYS, "model")
    model_name = name(path, node, "name", "a model name")
    if not isinstance(node.get("path"), str):
        raise ConfigError(f"{yamlfile.where(path, node, 'path')}: model needs 'path' (a string)")
    source = file(path, node, "path")
    declared = _declared(path, node)
    inputs = model_inputs(path, node, source)
    data: dict[str, tuple[Path, dict[str, Header]]] = {
        key: data_file(path, node, key, model_name, inputs)
        for key in ("dataset", "calibration")
        if key in node
    }
    dataset = data.get("dataset")
    spec = ModelSpec(
        name=model_name,
        path=source,
        dataset=dataset[0] if dataset else None,
        calibration=data["calibration"][0] if "calibration" in data else None,
        declared=declared,
        budgets=budgets(path, node),
        where=yamlfile.where(path, node),
        task=_task(path, node),
        inputs=tuple(inputs),
        shapes=shapes(path, node, model_name, inputs, batches, dataset[1] if dataset else None),
    )
    variants = _variants(path, node, spec)
    if any(variant.format == "tflite" for variant in variants):
        headers = (dataset or data.get("calibration") or (None, None))[1]
        fed = feed_dims(inputs, headers) if headers is not None else None
        check_converted_shapes(path, node, model_name, spec.shapes, fed)
    return replace(spec, variants=variants)


def _variants(path: Path, node: dict[str, Any], spec: ModelSpec) -> tuple[Variant, ...]:
    raw = node.get("variants", ["onnx:fp32"])
    where = yamlfile.where(path, node, "variants")
    if (
        not isinstance(raw, list)
        or not raw
        or not all(isinstance(v, str) and len(v) <= MAX_VARIANT for v in raw)
    ):
        raise ConfigError(f"{where}: 'variants' must be a list like [onnx:fp32, tflite:int8]")
    try:
        variants = tuple(Variant.parse(v) for v in raw)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if len(set(variants)) != len(variants):
        dup = next(v for v in variants if variants.count(v) > 1)
        raise ConfigError(f"{where}: variant {dup} appears twice")
    # int8 without a mode is one of the two modes: written beside that mode, it is the same
    # conversion twice, and one series.
    converted = [spec.series_variant(v) for v in variants]
    for variant, made in zip(variants, converted, strict=True):
        if made != variant and made in variants:
            raise ConfigError(
                f"{where}: variant {variant} is converted as {made} here, and {made} is listed"
                " too: the same conversion twice; list it once"
            )
    return variants


def _task(path: Path, node: dict[str, Any]) -> str | None:
    """`task:`, or None when the model has none."""
    if "task" not in node:
        return None
    task = node["task"]
    if task not in TASKS:
        raise ConfigError(
            f"{yamlfile.where(path, node, 'task')}: task must be one of {', '.join(TASKS)},"
            f" not {yamlfile.show(task)}"
        )
    return str(task)


def _declared(path: Path, node: dict[str, Any]) -> dict[str, str]:
    """family, architecture...: one short line each, since they are copied into the card."""
    declared = {}
    for key in DECLARED_KEYS:
        if key not in node:
            continue
        value = node[key]
        text = str(value) if isinstance(value, str | int | float) else ""
        if isinstance(value, bool) or not yamlfile.is_line(text, MAX_DECLARED):
            raise ConfigError(
                f"{yamlfile.where(path, node, key)}: {key} must be one line of text of at most"
                f" {MAX_DECLARED} characters, not {yamlfile.show(value)}"
            )
        declared[key] = text
    return declared
