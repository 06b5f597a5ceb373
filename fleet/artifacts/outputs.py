"""Every output of a model on a data set, run in this process, and a variant's outputs put
in its reference's layout so that the two can be compared output by output.

onnx2tf writes TensorFlow's layout: a 3-, 4- or 5-D output that ONNX gives channel-first
(NCW, NCHW, NCDHW) comes out channel-last (NWC, NHWC, NDHWC), and it has no option to keep
an output's ONNX layout (1.29: `-k`, `-kt` and `-kat` name inputs only). So a variant's
output that has the reference's shape with axis 1 moved last is moved back; any other
difference is a `Mismatch` for that variant alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fleet.artifacts.artifact import Artifact
from fleet.artifacts.converter_env import last_lines
from fleet.artifacts.data import Samples, batches
from fleet.errors import ConfigError
from fleet_agent.protocol import InputSpec

# Samples run at once: up to 256, fewer for large inputs (an image network's activations
# are many times its input), so a data set of images fits in memory.
_BATCH_ELEMENTS = 1 << 21

Outputs = dict[str, np.ndarray]


class Mismatch(ConfigError):
    """A variant that cannot be compared with its reference: it does not load or run here,
    or its outputs cannot be matched to the reference's. Its own failure, not the run's."""


def predict(artifact: Artifact, samples: Samples) -> Outputs:
    """Every output by name, for every sample (fewer if a fixed batch size leaves a tail)."""
    inputs = artifact.card.inputs
    missing = [i["name"] for i in inputs if i["name"] not in samples.feeds]
    if missing:
        raise ConfigError(f"{artifact.path}: inputs {missing} are not in the data set")
    try:
        run = (_onnx_runner if artifact.variant.format == "onnx" else _tflite_runner)(artifact)
    except Exception as exc:  # both runtimes raise several unrelated types
        raise Mismatch(
            f"{artifact.variant} ({artifact.path.name}) does not load in its runtime to measure"
            f" fidelity: {type(exc).__name__}: {last_lines(str(exc), 1)}"
        ) from exc
    per_sample = sum(math.prod(array.shape[1:]) for array in samples.feeds.values())
    largest = max(1, min(256, _BATCH_ELEMENTS // max(per_sample, 1)))
    parts: list[Outputs] = []
    for part in batches(samples.count, inputs[0]["shape"][0], largest):
        feeds = {name: np.ascontiguousarray(array[part]) for name, array in samples.feeds.items()}
        try:
            parts.append(run(feeds))
        except Exception as exc:  # a runtime's own failure on this variant
            raise Mismatch(
                f"{artifact.variant} ({artifact.path.name}) fails on the data set:"
                f" {type(exc).__name__}: {last_lines(str(exc), 1)}"
            ) from exc
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def align(
    reference: Sequence[InputSpec], ref: Outputs, got: Outputs, variant: str
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, reference output, variant output) for each of the reference's outputs, the
    variant's in the reference's layout and both cut to the samples both have. A variant's
    output is found by name, else (TFLite names its outputs Identity, Identity_1... and may
    order them otherwise) as the one output whose shape fits, else by position."""
    pairs = []
    unused = dict(got)
    for index, spec in enumerate(reference):
        name = spec["name"]
        ours = ref[name]
        fits = [k for k, v in unused.items() if v.shape[1:] in _layouts(ours.shape[1:])]
        if name in unused:
            theirs = unused.pop(name)
        elif len(fits) == 1:
            theirs = unused.pop(fits[0])
        elif len(reference) == len(got) and not fits:  # by position: align() will explain
            theirs = unused.pop(list(got)[index], got[list(got)[index]])
        else:
            raise Mismatch(
                f"{variant} has no output {name!r} (it has {sorted(got)}); its outputs cannot"
                " be matched to FP32's"
            )
        count = min(len(ours), len(theirs))
        ours, theirs = ours[:count], theirs[:count]
        channel_last = (*ours.shape[:1], *ours.shape[2:], *ours.shape[1:2])
        if theirs.shape != ours.shape and ours.ndim >= 3 and theirs.shape == channel_last:
            theirs = np.moveaxis(theirs, -1, 1)
        if theirs.shape != ours.shape:
            raise Mismatch(
                f"{variant}: output {name!r} is {list(theirs.shape[1:])} per sample where FP32's"
                f" is {list(ours.shape[1:])}, in neither that layout nor onnx2tf's channel-last"
                f" one ({list(channel_last[1:])}); this variant cannot be compared, leave it out"
            )
        pairs.append((name, ours, theirs))
    return pairs


def _layouts(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """A sample's shape as the reference has it, and channel-last as onnx2tf writes it."""
    return [shape, (*shape[1:], *shape[:1])] if len(shape) >= 2 else [shape]


def _onnx_runner(artifact: Artifact) -> Callable[[Mapping[str, np.ndarray]], Outputs]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(names, dict(feeds)), strict=True))


def _tflite_runner(artifact: Artifact) -> Callable[[Mapping[str, np.ndarray]], Outputs]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(artifact.path))
    if interpreter.get_signature_list():  # names as in ONNX; resizes to each batch itself
        runner = interpreter.get_signature_runner()
        return lambda feeds: {k: np.asarray(v) for k, v in runner(**feeds).items()}
    # onnx2tf's dynamic-range file has no signature; its tensor names are the card's names.
    inputs = {d["name"]: d["index"] for d in interpreter.get_input_details()}
    outputs = {d["name"]: d["index"] for d in interpreter.get_output_details()}

    def run(feeds: Mapping[str, Any]) -> Outputs:
        for name, value in feeds.items():
            interpreter.resize_tensor_input(inputs[name], value.shape)
        interpreter.allocate_tensors()
        for name, value in feeds.items():
            interpreter.set_tensor(inputs[name], value)
        interpreter.invoke()
        return {name: np.asarray(interpreter.get_tensor(i)) for name, i in outputs.items()}

    return run
