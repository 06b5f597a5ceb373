"""The untimed accuracy pass over a case's data set, after all timing is done.

Data sets are ``.npz`` files in the forms ``fleet_agent.datasets`` reads, the controller's
rules: ``inputs``, or one array per input name (with, optionally, ``labels``: class ids); or a
decoder's ``tokens``, ``lengths`` and optionally ``next_token``, scored on the token after
each prompt.

The outputs compared are the first output's values, one row per sample (for a decoder, the
logits of the next token). With labels: top-1 and top-5 accuracy. With a reference (the
outputs of the FP32 ONNX variant of the same model on the same device and data, saved by
that case, when it ran): agreement of the top-1 class, cosine similarity (min, mean), max
absolute error and the signal-to-noise ratio in dB.

Saving those outputs is the one write of a case. When it fails (a full disk), the case keeps
its measurements and says why in ``accuracy_error``; the other variants then have no
reference to agree with. The same holds when scoring fails (a data set that does not fit,
a runtime that refuses a sample): the pass is untimed and comes after the timing, so its
failure is said in ``accuracy_error`` and never costs the case its latency.
"""

import contextlib
import errno
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from fleet_agent import datasets, runtimes
from fleet_agent.generate import Decoder
from fleet_agent.protocol import Case, InputSpec


def evaluate(session: runtimes.Session, case: Case) -> Dict[str, Any]:
    """The accuracy fields of a case with a data set (``case["dataset"]`` is set). Scoring
    that fails says why in ``accuracy_error``, naming the data set and the step."""
    fields: Dict[str, Any] = {}
    try:
        outputs, labels = score(session, case)
        fields["accuracy_samples"] = float(len(outputs))
        if labels is not None:
            fields.update(top_k(outputs, labels))
        reference = case["reference"]
        # No reference file: the FP32 ONNX case did not run here (skipped on a device without
        # ONNX Runtime, or failed), so there is nothing to agree with.
        if reference and os.path.exists(reference):
            fields.update(agreement(np.load(reference), outputs))
    except MemoryError:
        raise  # the worker reports it as out_of_memory
    except Exception as exc:  # the runtime raises many types; none may cost the timing
        problem = " ".join(str(exc).split())[:300] or type(exc).__name__
        fields["accuracy_error"] = "accuracy step failed on data set {}: {}: {}".format(
            case["dataset"], type(exc).__name__, problem
        )
        return fields
    if case["save_outputs"]:
        unsaved = save(case["save_outputs"], outputs)
        if unsaved:
            fields["accuracy_error"] = (
                "outputs not saved: {}; the model's other variants"
                " are not compared with them".format(unsaved)
            )
    return fields


def score(session: runtimes.Session, case: Case) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """The first output per sample over the data set, and its labels (None without)."""
    with np.load(str(case["dataset"])) as data:
        arrays = {name: data[name] for name in data.files}
    # The session's names where they are the model card's (ONNX), else the card's in the
    # session's order (a TFLite file's signature keeps the ONNX names, its tensors do not:
    # the card reads them from the signature, in the interpreter's order). Rank and dtype are
    # the session's, its dimensions left open (the runtime checks those).
    names = [name for name, _, _ in session.inputs]
    card = [spec["name"] for spec in case["inputs"] or []]
    if set(card) != set(names) and len(card) == len(names):
        names = card
    specs: List[InputSpec] = [
        {"name": name, "shape": [None] * len(shape), "dtype": np.dtype(dtype).name}
        for name, (_, shape, dtype) in zip(names, session.inputs)
    ]
    found = datasets.check(specs, {k: (a.shape, a.dtype) for k, a in arrays.items()})
    labels = arrays[found.labels] if found.labels else None
    if found.form == "tokens":
        decoder = Decoder(session)
        outputs = np.stack(
            [
                decoder.next_logits(row[: int(n)])
                for row, n in zip(arrays["tokens"], arrays["lengths"])
            ]
        ).astype(np.float32)
        return outputs, labels
    return predict(session, [arrays[found.feeds[name]] for name in names]), labels


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


def predict(session: runtimes.Session, columns: List[np.ndarray]) -> np.ndarray:
    """The first output, flattened per sample, for every sample of the data set (batch 1);
    ``columns`` hold one array per model input, in the session's order."""
    rows = []
    for index in range(len(columns[0])):
        feed = session.make_feed([np.ascontiguousarray(c[index][None, ...]) for c in columns])
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
        "snr_db": snr_db(ref, out),
    }


MAX_DB = 200.0  # identical outputs: finite, so it stays a JSON number (as fleet.artifacts)


def snr_db(reference: np.ndarray, outputs: np.ndarray) -> float:
    """10·log10(signal power / error power) over all outputs: the fidelity of a tensor
    output (a detection map, an image), where top-1 agreement means nothing."""
    noise = float(np.sum((reference - outputs) ** 2))
    power = float(np.sum(reference**2))
    if noise <= 0:
        return MAX_DB
    if power <= 0:
        return -MAX_DB
    return float(np.clip(10 * np.log10(power / noise), -MAX_DB, MAX_DB))
