"""Fidelity: how closely a converted variant follows its FP32 source on a data set.

Both models run in this process (onnxruntime on the CPU, LiteRT with its default CPU
kernels) on the same samples, and every output is compared (fleet.artifacts.outputs puts a
TFLite output back in ONNX's layout). The model's task chooses the measures:

- every task: SNR and PSNR in dB over the whole data set (10·log10(Σref² / Σ(ref−got)²)
  and 20·log10(max|ref| / RMS error), as Qualcomm AI Hub reports them per output) and the
  largest absolute difference, each the worst output's; all but `tensor`: cosine similarity
  (lowest and mean over samples; a map that is all zeros in FP32 has no direction, so
  cosine does not judge other tensors);
- classification (and a decoder's next token, `generation`): top-1 and top-5 agreement with
  FP32 and, with labels, both accuracies and the drop in percentage points;
- embedding: nearest-neighbour agreement (each sample's nearest other sample, by cosine,
  is the same for both).

A prediction counts only when it is strict: a class tied with another for the top (an
all-zero output ties every class) is no prediction, so a variant whose outputs are zeros
agrees with nothing. Outputs that do not vary over the data set are flagged
(`constant_output`) and such a variant is refused by every budget check.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fleet.artifacts.artifact import Artifact
from fleet.artifacts.cache import sha256_file
from fleet.artifacts.card import Fidelity, ModelCard
from fleet.artifacts.data import Samples, load_samples
from fleet.artifacts.outputs import Mismatch, align, predict
from fleet.errors import ConfigError, FleetError

# Part of every fidelity result: a stored one made by another method is measured again.
METHOD = 3
TASKS = ("classification", "embedding", "tensor", "generation")
MAX_DB = 200.0  # SNR/PSNR of identical outputs: finite, so it stays a JSON number
# Budget -> (fidelity measure, True when the measure must stay at or below the budget): the
# result fields fleet.suite.budgets judges on the device, so both judge the same figure.
# accuracy_drop_pp is judged apart: by the accuracy drop, or the disagreement without labels.
FIDELITY_BUDGETS: dict[str, tuple[str, bool]] = {
    "min_cosine": ("cosine_mean", False),
    "min_snr_db": ("snr_db", False),
    "max_abs_error": ("max_abs_error", True),
}
BUDGETS = ("accuracy_drop_pp", *FIDELITY_BUDGETS)
UNITS = {"accuracy_drop_pp": " pp", "min_snr_db": " dB"}


class FidelityBudgetError(FleetError):
    """A variant that conversion made worse than its budgets allow, or that is broken."""

    def __init__(self, variant: str, message: str) -> None:
        super().__init__(message)
        self.variant = variant


def infer_task(card: ModelCard, samples: Samples) -> str:
    """The task when the suite names none: a decoder's data set says generation; labels or
    a [batch, classes] output say classification; anything else is a tensor."""
    if samples.positions is not None:
        return "generation"
    first = card.outputs[0]["shape"] if card.outputs else []
    return "classification" if samples.labels is not None or len(first) == 2 else "tensor"


def fidelity(
    reference: Artifact, candidate: Artifact, dataset: Path, task: str | None = None
) -> Fidelity:
    """Compare `candidate` to `reference` on the samples in `dataset` (.npz). A variant that
    cannot be compared gets `error` instead of measures; a bad data set raises."""
    if task is not None and task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; fleet knows {', '.join(TASKS)}")
    samples = load_samples(dataset, reference.card.inputs)
    task = task or infer_task(reference.card, samples)
    result: Fidelity = {
        "method": METHOD,
        "dataset": dataset.name,
        "dataset_sha256": sha256_file(dataset),
        "task": task,
    }
    ref = predict(reference, samples)
    try:
        pairs = align(
            reference.card.outputs, ref, predict(candidate, samples), str(candidate.variant)
        )
    except Mismatch as exc:
        result["error"] = str(exc)
        return result
    count = len(pairs[0][1])
    if samples.positions is not None:  # decoders: the logits for the token after each prompt
        rows = np.arange(count)
        pairs = [
            (name, r[rows, samples.positions[:count]], g[rows, samples.positions[:count]])
            if r.ndim >= 3
            else (name, r, g)
            for name, r, g in pairs
        ]
    result["samples"] = float(count)
    if all(np.ptp(g) == 0 for _, _, g in pairs) and any(np.ptp(r) > 0 for _, r, _ in pairs):
        result["constant_output"] = True
    per_output = {name: tensor_measures(r, g, cosine=task != "tensor") for name, r, g in pairs}
    for key in ("cosine_min", "cosine_mean", "snr_db", "psnr_db"):
        if key in per_output[pairs[0][0]]:
            result[key] = min(m[key] for m in per_output.values())
    result["max_abs_error"] = max(m["max_abs_error"] for m in per_output.values())
    if len(per_output) > 1:
        result["outputs"] = per_output
    _, first_ref, first_got = pairs[0]
    if task in ("classification", "generation"):
        result.update(class_measures(first_ref, first_got, samples.labels, dataset))
    elif task == "embedding" and count >= 3:
        result["neighbour_agreement"] = neighbour_agreement(first_ref, first_got)
    return result


def tensor_measures(ref: np.ndarray, got: np.ndarray, cosine: bool = True) -> dict[str, float]:
    """Cosine per sample (the lowest and the mean; left out with `cosine` false), SNR and PSNR
    over the whole output (a sample whose reference is all zeros, the text map of an image
    without text, has no SNR of its own), the largest absolute error."""
    flat_ref = ref.reshape(len(ref), -1).astype(np.float64)
    flat_got = got.reshape(len(got), -1).astype(np.float64)
    error = flat_ref - flat_got
    norms = np.linalg.norm(flat_ref, axis=1) * np.linalg.norm(flat_got, axis=1)
    identical = ~error.any(axis=1)
    similar = np.where(
        identical, 1.0, np.einsum("ij,ij->i", flat_ref, flat_got) / np.maximum(norms, 1e-300)
    )
    noise = float((error**2).sum())
    angles = {"cosine_min": float(similar.min()), "cosine_mean": float(similar.mean())}
    return {
        **(angles if cosine else {}),
        "snr_db": _decibels(float((flat_ref**2).sum()), noise),
        "psnr_db": _decibels(float(np.abs(flat_ref).max(initial=0.0)) ** 2, noise / error.size),
        "max_abs_error": float(np.abs(error).max(initial=0.0)),
    }


def _decibels(power: float, noise: float) -> float:
    """10·log10(power / noise), within ±MAX_DB (no noise: MAX_DB; no power: -MAX_DB)."""
    if noise <= 0:
        return MAX_DB
    if power <= 0:
        return -MAX_DB
    return float(np.clip(10 * np.log10(power / noise), -MAX_DB, MAX_DB))


def strictly_in_top(scores: np.ndarray, classes: np.ndarray, k: int) -> np.ndarray:
    """Per row: the given class scores above the (k+1)-th highest score of that row, so it is
    in the top k without a tie at the border (all-equal scores put no class in any top k)."""
    flat = scores.reshape(-1, scores.shape[-1])
    picked = np.take_along_axis(flat, classes.reshape(-1, 1).astype(np.int64), axis=1)[:, 0]
    if k >= flat.shape[1]:
        return np.asarray(np.isfinite(picked)).reshape(classes.shape)
    border = -np.partition(-flat, k, axis=1)[:, k]  # the (k+1)-th highest
    return np.asarray(picked > border).reshape(classes.shape)


def class_measures(
    ref: np.ndarray, got: np.ndarray, labels: np.ndarray | None, dataset: Path
) -> Fidelity:
    """Top-1 (and top-5, with more than five classes) agreement of `got` with the reference's
    top class; with labels, both accuracies and the drop."""
    ref_top1 = ref.argmax(axis=-1)
    measures: Fidelity = {  # type: ignore[typeddict-item]  # the measures only
        "agreement_top1": float(strictly_in_top(got, ref_top1, 1).mean()),
    }
    if ref.shape[-1] > 5:
        measures["agreement_top5"] = float(strictly_in_top(got, ref_top1, 5).mean())
    if labels is not None:
        labels = labels[: len(ref)]
        if labels.shape != ref_top1.shape:
            raise ConfigError(
                f"{dataset}: 'labels' has shape {list(labels.shape)} but the model's top-1"
                f" predictions have shape {list(ref_top1.shape)}"
            )
        measures["accuracy_top1_reference"] = float(strictly_in_top(ref, labels, 1).mean())
        measures["accuracy_top1"] = float(strictly_in_top(got, labels, 1).mean())
        measures["accuracy_drop_pp"] = 100.0 * (
            measures["accuracy_top1_reference"] - measures["accuracy_top1"]
        )
    return measures


def neighbour_agreement(ref: np.ndarray, got: np.ndarray) -> float:
    """How often each sample's nearest other sample (by cosine) under FP32 is strictly the
    nearest under the variant too: what a search over these embeddings would return."""

    def similarities(x: np.ndarray) -> np.ndarray:
        flat = x.reshape(len(x), -1).astype(np.float64)
        flat = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-300)
        sims: np.ndarray = flat @ flat.T
        np.fill_diagonal(sims, -np.inf)
        return sims

    nearest = similarities(ref).argmax(axis=1)
    return float(strictly_in_top(similarities(got), nearest, 1).mean())


def check_fidelity_budgets(card: ModelCard, budgets: Mapping[str, float]) -> None:
    """Refuse a variant, before any device time, that conversion broke or made worse than
    `budgets` allow (a suite's and model's budgets; keys other than BUDGETS are ignored).

    A variant that could not be compared, or whose outputs are constant, is refused whatever
    the budgets. accuracy_drop_pp is judged on the accuracy drop with labels; without them a
    classifier's (or decoder's) top-1 disagreement with FP32 stands in for it (it bounds the
    drop from above), and other tasks are not judged by it: use min_cosine or min_snr_db.
    """
    variant = card.variant or card.format
    source = card.source or "the model"
    wanted = {k: v for k, v in budgets.items() if k in BUDGETS}
    measured = card.fidelity
    if measured is None:
        if wanted:
            raise ConfigError(
                f"{variant}: no fidelity in its model card; convert it with a data set to check"
                f" the budgets {', '.join(sorted(wanted))}"
            )
        return
    where = f"{variant} of {source} on {measured['dataset']}"
    if "error" in measured:
        raise FidelityBudgetError(variant, f"{where}: {measured['error']}")
    if measured.get("constant_output"):
        raise FidelityBudgetError(
            variant,
            f"{where}: its outputs are the same for every sample while FP32's vary: the"
            " conversion is broken; use another variant",
        )
    broken = []
    for budget, limit in sorted(wanted.items()):
        what, value, at_most = _judged(budget, measured)
        if value is not None and (value > limit if at_most else value < limit):
            unit = UNITS.get(budget, "")
            side = "above" if at_most else "below"
            broken.append(f"{what} {value:.6g}{unit} is {side} the budget {budget} {limit:g}")
    if broken:
        raise FidelityBudgetError(
            variant, f"{where}: {'; '.join(broken)}; use another variant or change the budget"
        )


def _judged(budget: str, measured: Fidelity) -> tuple[str, float | None, bool]:
    """(what is judged, its value or None where it does not apply, True for a ceiling)."""
    if budget != "accuracy_drop_pp":
        key, at_most = FIDELITY_BUDGETS[budget]
        return key, measured.get(key), at_most  # type: ignore[return-value]
    if "accuracy_drop_pp" in measured:
        return "accuracy drop", measured["accuracy_drop_pp"], True
    if "agreement_top1" in measured:
        disagreement = 100.0 * (1.0 - measured["agreement_top1"])
        return "top-1 disagreement with FP32 (no labels)", disagreement, True
    return budget, None, True
