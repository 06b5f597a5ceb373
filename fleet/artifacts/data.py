"""Data sets and calibration sets: .npz files checked against a model's inputs.

A file holds `inputs` (for a model with one input) or one array per input name, and may hold
`labels` (class ids: shaped like the argmax of the model's first output). A decoder's data
set, as the agent reads it too, holds `tokens` [N, T] (zero-padded prompts), `lengths` [N]
and optionally `next_token` [N]: the prediction compared is the one after each prompt.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from fleet.errors import ConfigError
from fleet_agent.protocol import InputSpec

_T = TypeVar("_T")


@dataclass(frozen=True)
class Samples:
    feeds: Mapping[str, np.ndarray]  # input name -> array with the samples on axis 0
    labels: np.ndarray | None
    count: int
    positions: np.ndarray | None = None  # decoders: where each prompt's next token is predicted


# A data set is read whole, here and on every device: a validation or calibration set is
# far below this, and a file that declares more is refused before anything is allocated.
MAX_NPZ_BYTES = 2 * 1024**3
# numpy.savez stores, numpy.savez_compressed deflates; other methods are not numpy's (and
# bzip2/lzma decompress without a bound per read).
_NPZ_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def inspect_npz(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each array's shape and dtype from a .npz file's headers, without reading the data:
    enough to refuse a file that is not a .npz, is cut short or is too large."""
    return _npz(path, _headers)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of a .npz file. Whatever is wrong with the file (not a zip, truncated,
    garbage, pickled objects, too large) is a ConfigError naming it, never another error."""
    return _npz(path, _arrays)


def _npz(path: Path, read: Callable[[Path, zipfile.ZipFile], _T]) -> _T:
    try:
        with zipfile.ZipFile(path) as archive:
            return read(path, archive)
    except ConfigError:
        raise
    except Exception as exc:  # the file is the user's: any way it fails to parse is theirs
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:120]
        raise ConfigError(
            f"{path}: not a readable .npz file ({reason}); write it with numpy.savez"
        ) from None


def _headers(path: Path, archive: zipfile.ZipFile) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    members = archive.infolist()
    if sum(member.file_size for member in members) > MAX_NPZ_BYTES:
        raise ConfigError(
            f"{path}: holds more than {MAX_NPZ_BYTES // 1024**3} GiB of arrays; every device"
            " loads the whole data set, so use fewer samples"
        )
    headers = {}
    for member in members:
        if not member.filename.endswith(".npy") or member.compress_type not in _NPZ_METHODS:
            raise ConfigError(
                f"{path}: {member.filename[:60]!r} is not an array as numpy.savez writes them"
                " (a .npy, stored or deflated)"
            )
        with archive.open(member) as stream:
            version = np.lib.format.read_magic(stream)
            header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = header(stream)
            offset = stream.tell()
        if math.prod(shape) * dtype.itemsize > member.file_size - offset:
            raise ConfigError(
                f"{path}: array {member.filename[:-4]!r} is cut short (its header declares"
                f" {list(shape)} {dtype}); write the file again"
            )
        headers[member.filename[:-4]] = (tuple(shape), dtype)
    return headers


def _arrays(path: Path, archive: zipfile.ZipFile) -> dict[str, np.ndarray]:
    arrays = {}
    for name in _headers(path, archive):
        with archive.open(f"{name}.npy") as stream:
            arrays[name] = np.lib.format.read_array(stream, allow_pickle=False)
    return arrays


def load_samples(path: Path, inputs: Sequence[InputSpec]) -> Samples:
    """Read `path` and check it fits `inputs` (a model card's inputs: name, shape, dtype)."""
    arrays = load_npz(path)
    names = [i["name"] for i in inputs]
    positions = None
    label_key = "labels"
    if len(names) == 1 and "inputs" in arrays:
        feeds = {names[0]: arrays["inputs"]}
    elif len(names) == 1 and "tokens" in arrays and "lengths" in arrays:
        tokens, lengths = arrays["tokens"], arrays["lengths"]
        if not (tokens.ndim == 2 and lengths.ndim == 1 and _whole(tokens) and _whole(lengths)):
            raise ConfigError(
                f"{path}: 'tokens' must be whole numbers shaped [prompts, tokens] and 'lengths'"
                " whole numbers shaped [prompts]"
            )
        feeds = {names[0]: tokens}
        positions = lengths.astype(np.int64) - 1
        if "next_token" in arrays:
            arrays["labels"], label_key = arrays["next_token"], "next_token"
    elif all(name in arrays for name in names):
        feeds = {name: arrays[name] for name in names}
    else:
        raise ConfigError(
            f"{path}: needs an array 'inputs' (for a model with one input) or arrays named"
            f" after the model's inputs {names}; it has {sorted(arrays)}"
        )
    count = -1
    for spec in inputs:
        name = spec["name"]
        feeds[name] = _fit(path, name, feeds[name], spec)
        if feeds[name].ndim == 0:
            raise ConfigError(f"{path}: {name!r} needs the samples on its first axis")
        if count not in (-1, len(feeds[name])):
            raise ConfigError(f"{path}: the input arrays hold different numbers of samples")
        count = len(feeds[name])
    labels = arrays.get("labels")
    if labels is not None:
        _check_labels(path, label_key, labels, count)
    if count == 0:
        raise ConfigError(f"{path}: the data set has no samples")
    if positions is not None and (
        len(positions) != count
        or positions.min() < 0
        or positions.max() >= arrays["tokens"].shape[1]
    ):
        raise ConfigError(f"{path}: 'lengths' must give 1..{arrays['tokens'].shape[1]} per prompt")
    return Samples(feeds, labels, count, positions)


def _whole(array: np.ndarray) -> bool:
    return array.dtype.kind in "iu"


def _check_labels(path: Path, key: str, labels: np.ndarray, count: int) -> None:
    """Labels are class ids: a negative or fractional one can never match a prediction, so
    it would count silently as a wrong answer."""
    if labels.ndim != 1 or not _whole(labels):
        raise ConfigError(
            f"{path}: {key!r} must be class ids, whole numbers shaped [samples]; it holds"
            f" {labels.dtype} shaped {list(labels.shape)}"
        )
    if len(labels) != count:
        raise ConfigError(f"{path}: {key!r} has {len(labels)} entries for {count} samples")
    if len(labels) and labels.min() < 0:
        row = int(np.argmin(labels))
        raise ConfigError(
            f"{path}: {key!r} must be class ids of 0 or more; entry {row} is {labels[row]}"
        )


def _fit(path: Path, name: str, array: np.ndarray, spec: InputSpec) -> np.ndarray:
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
