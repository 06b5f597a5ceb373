"""Data sets and calibration sets: .npz files checked against a model's inputs.

A file holds `inputs` (for a model with one input) or one array per input name, and may hold
`labels` (class ids: shaped like the argmax of the model's first output). A decoder's data
set, as the agent reads it too, holds `tokens` [N, T] (zero-padded prompts), `lengths` [N]
and optionally `next_token` [N]: the prediction compared is the one after each prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fleet.errors import ConfigError


@dataclass(frozen=True)
class Samples:
    feeds: Mapping[str, np.ndarray]  # input name -> array with the samples on axis 0
    labels: np.ndarray | None
    count: int
    positions: np.ndarray | None = None  # decoders: where each prompt's next token is predicted


def load_samples(path: Path, inputs: Sequence[Mapping[str, Any]]) -> Samples:
    """Read `path` and check it fits `inputs` (a model card's inputs: name, shape, dtype)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(f"{path}: not a readable .npz data set ({exc})") from exc
    names = [str(i["name"]) for i in inputs]
    positions = None
    if len(names) == 1 and "inputs" in arrays:
        feeds = {names[0]: arrays["inputs"]}
    elif len(names) == 1 and "tokens" in arrays and "lengths" in arrays:
        feeds = {names[0]: arrays["tokens"]}
        positions = arrays["lengths"].astype(np.int64) - 1
        if "next_token" in arrays:
            arrays["labels"] = arrays["next_token"]
    elif all(name in arrays for name in names):
        feeds = {name: arrays[name] for name in names}
    else:
        raise ConfigError(
            f"{path}: needs an array 'inputs' (for a model with one input) or arrays named"
            f" after the model's inputs {names}; it has {sorted(arrays)}"
        )
    count = -1
    for spec in inputs:
        name = str(spec["name"])
        feeds[name] = _fit(path, name, feeds[name], spec)
        if count not in (-1, len(feeds[name])):
            raise ConfigError(f"{path}: the input arrays hold different numbers of samples")
        count = len(feeds[name])
    labels = arrays.get("labels")
    if labels is not None and len(labels) != count:
        raise ConfigError(f"{path}: 'labels' has {len(labels)} entries for {count} samples")
    if count == 0:
        raise ConfigError(f"{path}: the data set has no samples")
    if positions is not None and (
        len(positions) != count
        or positions.min() < 0
        or positions.max() >= arrays["tokens"].shape[1]
    ):
        raise ConfigError(f"{path}: 'lengths' must give 1..{arrays['tokens'].shape[1]} per prompt")
    return Samples(feeds, labels, count, positions)


def _fit(path: Path, name: str, array: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """Check one array against one model input; cast to its dtype where that loses nothing."""
    shape = list(spec["shape"])
    wanted = np.dtype(spec["dtype"])
    fits = array.ndim == len(shape) and all(
        not isinstance(dim, int) or dim == have
        for dim, have in zip(shape[1:], array.shape[1:], strict=True)
    )
    if not fits:
        raise ConfigError(
            f"{path}: {name!r} has shape {list(array.shape)} but the model input {name!r} is"
            f" {shape} (samples on the first axis); give data shaped like the model's input"
        )
    if array.dtype.kind != wanted.kind and not (array.dtype.kind in "iu" and wanted.kind in "iu"):
        raise ConfigError(
            f"{path}: {name!r} holds {array.dtype} values but the model input takes {wanted}"
        )
    return array.astype(wanted, copy=False)


def batches(count: int, first_dim: object, largest: int = 256) -> list[slice]:
    """Slices over the samples: the model's fixed batch size, or up to `largest` at a time.

    With a fixed batch size that does not divide the count, the last partial batch is left
    out (a model exported for batch 1 gets every sample).
    """
    if isinstance(first_dim, int) and first_dim > 0:
        size = first_dim
        count -= count % size
    else:
        size = largest
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]
