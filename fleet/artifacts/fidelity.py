"""Fidelity: how closely a converted variant follows its FP32 source on a data set.

Both models run in this process (onnxruntime on the CPU, LiteRT with its default CPU
kernels) on the same samples. Their first outputs are compared: top-1 agreement (argmax over
the last axis; a decoder's logits at the token after each prompt), cosine similarity per
sample, the largest absolute difference, and with labels each model's accuracy and the drop.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fleet.artifacts.artifact import Artifact
from fleet.artifacts.cache import sha256_file
from fleet.artifacts.card import Fidelity, ModelCard
from fleet.artifacts.converter_env import last_lines
from fleet.artifacts.data import Samples, batches, load_samples
from fleet.errors import ConfigError, FleetError

# Part of every fidelity result: a stored one made by another method is measured again.
METHOD = 1


class FidelityBudgetError(FleetError):
    """A variant lost more accuracy at conversion than its budget allows."""

    def __init__(self, variant: str, message: str) -> None:
        super().__init__(message)
        self.variant = variant


def fidelity(reference: Artifact, candidate: Artifact, dataset: Path) -> Fidelity:
    """Compare `candidate` to `reference` on the samples in `dataset` (.npz)."""
    samples = load_samples(dataset, reference.card.inputs)
    ref = _predict(reference, samples)
    got = _predict(candidate, samples)
    count = min(len(ref), len(got))  # a fixed batch size may have left the tail out
    ref, got = ref[:count].astype(np.float64), got[:count].astype(np.float64)
    if samples.positions is not None and ref.shape == got.shape:  # decoders: the next token
        ref, got = (out[np.arange(count), samples.positions[:count]] for out in (ref, got))
    if ref.shape != got.shape:
        raise ConfigError(
            f"{candidate.path}: output shape {list(got.shape)} differs from the reference's"
            f" {list(ref.shape)} on {dataset}"
        )
    flat_ref, flat_got = ref.reshape(count, -1), got.reshape(count, -1)
    norms = np.linalg.norm(flat_ref, axis=1) * np.linalg.norm(flat_got, axis=1)
    cosine = np.einsum("ij,ij->i", flat_ref, flat_got) / np.maximum(norms, 1e-30)
    ref_top1, got_top1 = ref.argmax(axis=-1), got.argmax(axis=-1)
    result: Fidelity = {
        "method": METHOD,
        "dataset": dataset.name,
        "dataset_sha256": sha256_file(dataset),
        "samples": float(count),
        "agreement_top1": float(np.mean(ref_top1 == got_top1)),
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "max_abs_error": float(np.abs(ref - got).max()),
    }
    labels = samples.labels
    if labels is not None:
        labels = labels[:count]
        if labels.shape != ref_top1.shape:
            raise ConfigError(
                f"{dataset}: 'labels' has shape {list(labels.shape)} but the model's top-1"
                f" predictions have shape {list(ref_top1.shape)}"
            )
        result["accuracy_top1_reference"] = float(np.mean(ref_top1 == labels))
        result["accuracy_top1"] = float(np.mean(got_top1 == labels))
        result["accuracy_drop_pp"] = 100.0 * (
            result["accuracy_top1_reference"] - result["accuracy_top1"]
        )
    return result


def check_fidelity_budget(card: ModelCard, max_drop_pp: float) -> None:
    """Refuse a variant whose conversion lost more than `max_drop_pp` points of accuracy.

    Without labels the disagreement with FP32 stands in for the drop: it bounds it from above.
    """
    variant = card.variant or card.format
    measured = card.fidelity
    if measured is None:
        raise ConfigError(
            f"{variant}: no fidelity in its model card; convert it with a data set to check"
            " the accuracy_drop_pp budget"
        )
    drop = measured.get("accuracy_drop_pp")
    what = "accuracy drop"
    if drop is None:
        drop = 100.0 * (1.0 - measured["agreement_top1"])
        what = "top-1 disagreement with FP32 (no labels)"
    if drop > max_drop_pp:
        raise FidelityBudgetError(
            variant,
            f"{variant} of {card.source or 'the model'}: {what} {drop:.2f} pp on"
            f" {measured['dataset']} exceeds the budget accuracy_drop_pp {max_drop_pp:g};"
            " use another variant or raise the budget",
        )


def _predict(artifact: Artifact, samples: Samples) -> np.ndarray:
    """The first output for every sample (fewer if a fixed batch size leaves a tail)."""
    inputs = artifact.card.inputs
    missing = [i["name"] for i in inputs if i["name"] not in samples.feeds]
    if missing:
        raise ConfigError(f"{artifact.path}: inputs {missing} are not in the data set")
    try:
        run = (_onnx_runner if artifact.variant.format == "onnx" else _tflite_runner)(artifact)
    except Exception as exc:  # both runtimes raise several unrelated types
        raise ConfigError(
            f"{artifact.path}: {artifact.variant} does not load in its runtime to measure"
            f" fidelity: {type(exc).__name__}: {last_lines(str(exc), 1)}"
        ) from exc
    parts = [
        run({name: np.ascontiguousarray(array[part]) for name, array in samples.feeds.items()})
        for part in batches(samples.count, inputs[0]["shape"][0])
    ]
    return np.concatenate(parts)


def _onnx_runner(artifact: Artifact) -> Any:
    import onnxruntime as ort

    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    first = session.get_outputs()[0].name
    return lambda feeds: session.run([first], feeds)[0]


def _tflite_runner(artifact: Artifact) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(artifact.path))
    first = artifact.card.outputs[0]["name"]
    if interpreter.get_signature_list():  # names as in ONNX; resizes to each batch itself
        runner = interpreter.get_signature_runner()
        return lambda feeds: runner(**feeds)[first]
    # onnx2tf's dynamic-range file has no signature; its tensor names are the card's names.
    inputs = {d["name"]: d["index"] for d in interpreter.get_input_details()}
    output = next(d["index"] for d in interpreter.get_output_details() if d["name"] == first)

    def run(feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        for name, value in feeds.items():
            interpreter.resize_tensor_input(inputs[name], value.shape)
        interpreter.allocate_tensors()
        for name, value in feeds.items():
            interpreter.set_tensor(inputs[name], value)
        interpreter.invoke()
        return np.asarray(interpreter.get_tensor(output))

    return run
