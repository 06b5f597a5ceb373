"""The untimed accuracy pass over a case's data set, after all timing is done.

Data sets are ``.npz`` files in one of two shapes:
- ``inputs`` (one row per sample, the model's first input without the batch dimension) and,
  optionally, ``labels`` (class indices): classifiers and other single-input models;
- ``tokens`` ``[N, T]`` (zero-padded prompts), ``lengths`` ``[N]`` and, optionally,
  ``next_token`` ``[N]``: decoder language models, scored on the token after each prompt.

The outputs compared are the first output's values, one row per sample (for a decoder, the
logits of the next token). With labels: top-1 and top-5 accuracy. With a reference (the
outputs of the FP32 ONNX variant of the same model on the same device and data, saved by
that case, when it ran): agreement of the top-1 class, cosine similarity (min, mean), max
absolute error.

Saving those outputs is the one write of a case. When it fails (a full disk), the case keeps
its measurements and says why in ``accuracy_error``; the other variants then have no
reference to agree with.
"""

import contextlib
import errno
import os
from typing import Any, Dict, Optional

import numpy as np

from fleet_agent import runtimes
from fleet_agent.generate import Decoder
from fleet_agent.protocol import Case


def evaluate(session: runtimes.Session, case: Case) -> Dict[str, Any]:
    """The accuracy fields of a case with a data set (``case["dataset"]`` is set)."""
    with np.load(str(case["dataset"])) as data:
        arrays = {name: data[name] for name in data.files}
    labels: Optional[np.ndarray]
    if "tokens" in arrays:
        decoder = Decoder(session)
        outputs = np.stack(
            [
                decoder.next_logits(row[: int(n)])
                for row, n in zip(arrays["tokens"], arrays["lengths"])
            ]
        ).astype(np.float32)
        labels = arrays.get("next_token")
    elif "inputs" in arrays:
        outputs = predict(session, arrays["inputs"])
        labels = arrays.get("labels")
    else:
        raise ValueError(
            "data set {} has {}; it needs 'inputs' (and 'labels'), or 'tokens' and"
            " 'lengths'".format(case["dataset"], ", ".join(sorted(arrays)) or "no arrays")
        )
    fields: Dict[str, Any] = {"accuracy_samples": float(len(outputs))}
    if labels is not None:
        fields.update(top_k(outputs, labels))
    if case["save_outputs"]:
        problem = save(case["save_outputs"], outputs)
        if problem:
            fields["accuracy_error"] = (
                "outputs not saved: {}; the model's other variants"
                " are not compared with them".format(problem)
            )
    reference = case["reference"]
    # No reference file: the FP32 ONNX case did not run here (skipped on a device without
    # ONNX Runtime, or failed), so there is nothing to agree with.
    if reference and os.path.exists(reference):
        fields.update(agreement(np.load(reference), outputs))
    return fields


def save(path: str, outputs: np.ndarray) -> Optional[str]:
    """Write the reference outputs; None, or what went wrong (a partial file is removed, so
    that no variant compares with it)."""
    try:
        with open(path, "wb") as handle:
            np.save(handle, outputs)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(path)
        return os_problem(exc, path)
    return None


def os_problem(exc: OSError, path: str) -> str:
    """An OSError as one line naming the path: "no space left on device (PATH)" for a full
    disk or quota."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on device ({})".format(path)
    return "{} ({})".format(exc.strerror or exc, path)


def predict(session: runtimes.Session, inputs: np.ndarray) -> np.ndarray:
    """The first output, flattened per sample, for every row of the data set (batch 1)."""
    if len(session.inputs) != 1:
        raise ValueError(
            "the data set's 'inputs' feed one input; the model has {}".format(len(session.inputs))
        )
    rows = []
    for row in inputs:
        feed = session.make_feed([np.ascontiguousarray(row[None, ...])])
        rows.append(np.asarray(session.run(feed)[0], dtype=np.float32).reshape(-1))
    stacked: np.ndarray = np.stack(rows)
    return stacked


def top_k(outputs: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """Top-1 accuracy, and top-5 where there are more than five classes."""
    ranked = np.argsort(-outputs, axis=1)
    fields = {"accuracy_top1": float(np.mean(ranked[:, 0] == labels))}
    if outputs.shape[1] > 5:
        hits = np.any(ranked[:, :5] == labels[:, None], axis=1)
        fields["accuracy_top5"] = float(np.mean(hits))
    return fields


def agreement(reference: np.ndarray, outputs: np.ndarray) -> Dict[str, float]:
    if reference.shape != outputs.shape:
        raise ValueError(
            "reference outputs are {} but this variant gave {}: not the same model or data"
            " set".format(list(reference.shape), list(outputs.shape))
        )
    ref: np.ndarray = reference.astype(np.float64)
    out: np.ndarray = outputs.astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cosine = np.sum(ref * out, axis=1) / np.where(norms == 0, 1.0, norms)
    return {
        "agreement_top1": float(np.mean(np.argmax(ref, axis=1) == np.argmax(out, axis=1))),
        "cosine_min": float(np.min(cosine)),
        "cosine_mean": float(np.mean(cosine)),
        "max_abs_error": float(np.max(np.abs(ref - out))),
    }
