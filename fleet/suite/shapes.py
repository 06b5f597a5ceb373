"""The shapes a model is timed at, and its data sets checked against its inputs, when the
suite loads.

A model input's dimension is fixed (an int in the file) or open (a name such as `sequence`).
Axis 0 is the batch: `measure.batch` sets it. Every other open dimension needs a value, taken
in this order from
- `shapes:` per input (`{input_ids: [batch, 128]}`; axis 0 written `batch`, or the batch),
- `sequence_lengths:` (axis 1 of each input not in `shapes` whose axis 1 is open), each
  length its own case and series,
- the data set: the dimension of the array that feeds the input;
and a dimension left without one refuses the suite: a silent 1 measured a transformer at one
token. The data set and the calibration set must fit the model's inputs (names, dtypes,
ranks, fixed dimensions), by the rules the agent applies (`fleet_agent.datasets`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet import yamlfile
from fleet.artifacts.card import model_card
from fleet.artifacts.data import inspect_npz
from fleet.errors import ConfigError
from fleet.suite.nodes import file, in_range
from fleet_agent.datasets import DataSetError, Header, check
from fleet_agent.protocol import InputSpec

Dims = tuple[int | None, ...]  # None: axis 0, the batch, which measure.batch sets
MAX_DIM = 1_048_576
MAX_LENGTHS = 64


@dataclass(frozen=True)
class Shape:
    """The shapes one case feeds: input name -> dims. `chosen` when the model left a
    dimension open and the suite or the data set gave it: the shape then tells series apart.
    `label` names one length of a sweep ("seq=128"); empty otherwise."""

    inputs: tuple[tuple[str, Dims], ...] = ()
    label: str = ""
    chosen: bool = False

    def dims(self, batch: int) -> dict[str, list[int]]:
        return {name: [batch if d is None else d for d in dims] for name, dims in self.inputs}

    def describe(self, batch: int) -> str:
        """input_ids=1x128,attention_mask=1x128 (a scalar input: `name=scalar`)."""
        return ",".join(
            f"{name}={'x'.join(map(str, dims)) or 'scalar'}"
            for name, dims in self.dims(batch).items()
        )


def model_inputs(path: Path, node: dict[str, Any], source: Path) -> list[InputSpec]:
    """The inputs of the model file `source`, read from it (once per version of it)."""
    version = source.stat()
    try:
        return _inputs(source, version.st_size, version.st_mtime_ns)
    except ConfigError as exc:
        raise ConfigError(f"{yamlfile.where(path, node, 'path')}: {exc}") from None


@functools.lru_cache(maxsize=64)
def _inputs(path: Path, size: int, mtime_ns: int) -> list[InputSpec]:
    return model_card(path).inputs


def data_file(
    path: Path, node: dict[str, Any], key: str, model: str, inputs: Sequence[InputSpec]
) -> tuple[Path, dict[str, Header]]:
    """A data or calibration set: its headers read now, and checked against the model's
    inputs, so a file that cannot feed the model stops the suite here, not on a device."""
    found = file(path, node, key)
    where = yamlfile.where(path, node, key)
    try:
        headers = inspect_npz(found)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {key} {exc}") from None
    try:
        check(inputs, headers)
    except DataSetError as exc:
        raise ConfigError(
            f"{where}: {key} {found} does not fit model {model!r} (checked against its"
            f" inputs {_described(inputs)}): {exc}; write it with numpy.savez"
        ) from None
    return found, headers


def shapes(
    path: Path,
    node: dict[str, Any],
    model: str,
    inputs: Sequence[InputSpec],
    batches: set[int],
    data: Mapping[str, Header] | None,
) -> tuple[Shape, ...]:
    """The shapes to time `model` at: one, or one per `sequence_lengths` entry."""
    given = _given(path, node, inputs, batches)
    lengths = _lengths(path, node)
    feeds = feed_dims(inputs, data) if data is not None else {}
    swept = [
        spec["name"]
        for spec in inputs
        if spec["name"] not in given and len(spec["shape"]) > 1 and not _fixed(spec["shape"][1])
    ]
    if lengths and not swept:
        raise ConfigError(
            f"{yamlfile.where(path, node, 'sequence_lengths')}: sequence_lengths sets axis 1 of"
            f" inputs whose axis 1 is open, and model {model!r} has none outside shapes:"
            f" {_described(inputs)}; drop sequence_lengths, or give each input in shapes"
        )
    points = []
    sweep: list[int | None] = [*lengths] or [None]
    for length in sweep:
        dims: list[tuple[str, Dims]] = []
        chosen = False
        for spec in inputs:
            name = spec["name"]
            axes: list[int | None] = []
            for axis, dim in enumerate(spec["shape"]):
                if axis == 0:
                    axes.append(None)
                    continue
                if isinstance(dim, int) and dim > 0:
                    axes.append(dim)
                    continue
                value = _open_value(given.get(name), length, name in swept, feeds.get(name), axis)
                if value is None:
                    raise ConfigError(
                        f"{yamlfile.where(path, node)}: model {model!r}: input {name!r}"
                        f" {list(spec['shape'])} has no value for its open dimension {axis}"
                        f" ({dim!r}), and fleet will not guess one; give it with"
                        f" shapes: {{{name}: {_example(spec['shape'])}}}, sequence_lengths:"
                        " [128], or a dataset that holds such inputs"
                    )
                axes.append(value)
                chosen = True
            dims.append((name, tuple(axes)))
        points.append(Shape(tuple(dims), f"seq={length}" if length else "", chosen))
    return tuple(points)


def feed_dims(inputs: Sequence[InputSpec], headers: Mapping[str, Header]) -> dict[str, Dims]:
    """Input name -> the shape of the data array that feeds it (samples on axis 0)."""
    found = check(inputs, headers)
    return {name: tuple(headers[array][0]) for name, array in found.feeds.items()}


def check_converted_shapes(
    path: Path,
    node: dict[str, Any],
    model: str,
    points: Sequence[Shape],
    fed: Mapping[str, Dims] | None,
) -> None:
    """TFLite variants of a model with open dimensions are converted with them fixed at its
    data's (`fed`: by the data set, else the calibration set), so they can be timed at those
    shapes only: at any other, the agent would time the converted shape, silently."""
    if not any(point.chosen for point in points):
        return  # the model leaves nothing open: a TFLite file keeps its shapes
    where = yamlfile.where(path, node, "variants")
    if fed is None:
        raise ConfigError(
            f"{where}: model {model!r} has open input dimensions, and its tflite variants are"
            " converted with them fixed at its data's: give it a dataset or calibration set"
        )
    for point in points:
        for name, dims in point.inputs:
            converted = fed.get(name)
            if converted is not None and dims[1:] != converted[1:]:
                raise ConfigError(
                    f"{where}: model {model!r}: its tflite variants are converted with input"
                    f" {name!r} fixed at its data's {[1, *converted[1:]]}, so they cannot be"
                    f" timed at {point.describe(1)}; list them under a model entry of their own"
                    " without shapes or sequence_lengths"
                )


def _open_value(
    given: Dims | None, length: int | None, swept: bool, data: Dims | None, axis: int
) -> int | None:
    if given is not None:
        return given[axis]
    if length is not None and swept and axis == 1:
        return length
    if data is not None:
        return data[axis]
    return None


def _fixed(dim: object) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim > 0


def _described(inputs: Sequence[InputSpec]) -> str:
    return ", ".join(f"{i['name']} {list(i['shape'])} {i['dtype']}" for i in inputs) or "none"


def _example(shape: Sequence[object]) -> str:
    dims = [
        "batch" if axis == 0 else str(d) if _fixed(d) else "128" for axis, d in enumerate(shape)
    ]
    return f"[{', '.join(dims)}]"


def _given(
    path: Path, node: dict[str, Any], inputs: Sequence[InputSpec], batches: set[int]
) -> dict[str, Dims]:
    """`shapes:` of a model: input name -> dims, each checked against the model's input."""
    raw = node.get("shapes", {})
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{yamlfile.where(path, node, 'shapes')}: 'shapes' must be a mapping of input name"
            f" to shape, like {{input_ids: [batch, 128]}}, not {yamlfile.show(raw)}"
        )
    specs = {spec["name"]: spec for spec in inputs}
    given = {}
    for name, dims in raw.items():
        where = yamlfile.where(path, raw, name)
        if name not in specs:
            raise ConfigError(
                f"{where}: shapes names {yamlfile.show(name)}, not an input of the model; its"
                f" inputs: {_described(inputs)}"
            )
        model_dims = specs[name]["shape"]
        example = _example(model_dims)
        if not isinstance(dims, list) or len(dims) != len(model_dims):
            raise ConfigError(
                f"{where}: shapes.{name} must be a list of {len(model_dims)} dimensions like"
                f" {example} (the input is {list(model_dims)}), not {yamlfile.show(dims)}"
            )
        first = dims[0] if dims else "batch"
        if first != "batch" and not (
            in_range(first, 1, MAX_DIM, whole=True) and {first} == batches
        ):
            raise ConfigError(
                f"{where}: shapes.{name}[0] is the batch axis, which measure.batch sets"
                f" ({', '.join(map(str, sorted(batches)))} here); write `batch` there, like"
                f" {example}"
            )
        for axis, (dim, fixed) in enumerate(zip(dims[1:], model_dims[1:], strict=True), 1):
            if _fixed(fixed) and dim != fixed:
                must = f"{fixed}, as the model fixes it"
            elif not in_range(dim, 1, MAX_DIM, whole=True):
                must = f"a whole number from 1 to {MAX_DIM:,}"
            else:
                continue
            raise ConfigError(
                f"{where}: shapes.{name}[{axis}] must be {must} (the input is"
                f" {list(model_dims)}), not {yamlfile.show(dim)}"
            )
        given[name] = (None, *dims[1:]) if model_dims else ()
    return given


def _lengths(path: Path, node: dict[str, Any]) -> list[int]:
    raw = node.get("sequence_lengths")
    if raw is None:
        return []
    ok = (
        isinstance(raw, list)
        and 0 < len(raw) <= MAX_LENGTHS
        and all(in_range(v, 1, MAX_DIM, whole=True) for v in raw)
        and len(set(raw)) == len(raw)
    )
    if not ok:
        raise ConfigError(
            f"{yamlfile.where(path, node, 'sequence_lengths')}: sequence_lengths must be a list"
            f" of 1-{MAX_LENGTHS} different whole numbers from 1 to {MAX_DIM:,}, like [32, 128],"
            f" not {yamlfile.show(raw)}"
        )
    return list(raw)
