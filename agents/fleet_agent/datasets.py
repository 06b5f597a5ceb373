"""Which arrays of a data set feed which model inputs: one rule, shared by the controller
(the suite check when it loads, conversion, fidelity) and the agent (the accuracy pass).

A data set is an ``.npz`` file with the samples on axis 0 of every array, in one of three forms:

- ``inputs``: the one input of a single-input model;
- one array per model input, named after it: the only form a model with several inputs
  (a transformer's ``input_ids`` and ``attention_mask``) can use;
- ``tokens`` ``[N, T]`` (zero-padded prompts) and ``lengths`` ``[N]``: a decoder's prompts,
  its one input.

Labels are class ids shaped ``[N]``: ``labels``, or ``next_token`` beside ``tokens``.
The checks read shapes and dtypes only, so the controller runs them on a file's headers and
the agent on the arrays it loaded; each problem is one line.
"""

from typing import Any, Dict, Iterable, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from fleet_agent.protocol import InputSpec

# (shape, dtype) of one array: what a .npz header says, or what a loaded array has.
Header = Tuple[Tuple[int, ...], Any]
Dim = Union[int, str, None]


class DataSetError(ValueError):
    """A data set that does not fit its model; the message says how, in one line."""


class Layout(NamedTuple):
    form: str  # "inputs", "named" or "tokens"
    feeds: Dict[str, str]  # model input name -> the array that feeds it
    labels: Optional[str]  # the array of class ids, when the data set has one


def layout(input_names: Sequence[str], arrays: Iterable[str]) -> Layout:
    """The arrays that feed ``input_names``, or DataSetError naming what is missing."""
    names = list(input_names)
    have = set(arrays)
    labels = "labels" if "labels" in have else None
    if len(names) == 1 and "inputs" in have:
        return Layout("inputs", {names[0]: "inputs"}, labels)
    if len(names) == 1 and "tokens" in have and "lengths" in have:
        return Layout(
            "tokens", {names[0]: "tokens"}, "next_token" if "next_token" in have else None
        )
    if names and all(name in have for name in names):
        return Layout("named", {name: name for name in names}, labels)
    missing = [name for name in names if name not in have]
    raise DataSetError(
        "needs {}arrays named after the model's inputs {} (missing {}); it has {}".format(
            "an array 'inputs' (the model has one input) or " if len(names) == 1 else "",
            names,
            missing,
            sorted(have) or "no arrays",
        )
    )


def check(inputs: Sequence[InputSpec], headers: Mapping[str, Header]) -> Layout:
    """The layout of a data set whose arrays have ``headers``, checked against the model's
    ``inputs``: each feeding array has the input's rank, a dtype it takes and its fixed
    dimensions (axis 0, the samples, excepted); all hold the same number of samples; labels
    (and a decoder's lengths) are whole numbers, one per sample."""
    found = layout([spec["name"] for spec in inputs], headers)
    count = None
    for spec in inputs:
        array = found.feeds[spec["name"]]
        shape, dtype = headers[array]
        problem = input_problem(spec["shape"], spec["dtype"], shape, dtype)
        if problem:
            raise DataSetError(
                "array {!r} cannot feed input {!r}: {}".format(array, spec["name"], problem)
            )
        if count is not None and shape[0] != count:
            raise DataSetError(
                "its input arrays hold different numbers of samples ({} and {})".format(
                    count, shape[0]
                )
            )
        count = shape[0]
    if count == 0:
        raise DataSetError("it has no samples")
    extra = [found.labels] if found.labels else []
    extra += ["lengths"] if found.form == "tokens" else []
    for name in extra:
        shape, dtype = headers[name]
        if len(shape) != 1 or np.dtype(dtype).kind not in "iu" or shape[0] != count:
            raise DataSetError(
                "{!r} must be whole numbers, one per sample ([{}]); it holds {} shaped {}".format(
                    name, count, np.dtype(dtype).name, list(shape)
                )
            )
    return found


def input_problem(dims: Sequence[Dim], takes: Any, shape: Sequence[int], dtype: Any) -> str:
    """Why an array of ``shape`` and ``dtype`` (samples on axis 0) cannot feed a model input
    of ``dims`` taking ``takes``; empty when it can. A str or None dimension is open."""
    if len(shape) != len(dims):
        return "it is {}-D {}, the input {}-D {} (samples on axis 0)".format(
            len(shape), list(shape), len(dims), list(dims)
        )
    fixed = [(axis, d) for axis, d in enumerate(dims) if axis and isinstance(d, int) and d > 0]
    wrong = [(axis, d) for axis, d in fixed if shape[axis] != d]
    if wrong:
        axis, wanted = wrong[0]
        return "axis {} is {}, the input's is fixed at {} (input {}, array {})".format(
            axis, shape[axis], wanted, list(dims), list(shape)
        )
    have, want = np.dtype(dtype), np.dtype(takes)
    if have.kind != want.kind and not (have.kind in "iu" and want.kind in "iu"):
        return "it holds {} values, the input takes {}".format(have.name, want.name)
    return ""
