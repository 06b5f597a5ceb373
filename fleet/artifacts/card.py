"""Model cards: what a model file is, read from the file itself plus what the suite declares.

A card is a frozen `ModelCard`; `to_dict()` is its plain JSON, stored beside an artifact and
printed by `fleet model card --json`. `params` counts the elements of weight tensors: constant
float, 8-bit or 4-bit tensors (and int32 biases of quantized ops), stored or computed when the
model loads (fleet.artifacts.onnx_weights), never shape constants or quantization scales;
`weight_bytes` what each type takes, and `model_size_mb` the file plus the computed weights.
"""

from __future__ import annotations

import json
import types
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypedDict, Union, get_args, get_origin, get_type_hints, is_typeddict

import numpy as np

from fleet.artifacts.onnx_weights import WEIGHT_DTYPES, Weight, onnx_weights
from fleet.errors import ConfigError
from fleet_agent.protocol import InputSpec

MB = 1_000_000  # model_size_mb is in megabytes (10^6 bytes), as embedded budgets are quoted

# Weight tensor types, narrowest first -> the precision a person would name. A graph's
# precision is the narrowest type that holds at least PRECISION_SHARE of its weight elements:
# a quantized encoder whose embedding tables stay float32 is still an int8 model, and the
# dynamic quantizer's uint8 weights are int8 too.
_PRECISION_OF_TYPE = {
    "int4": "int4",
    "uint4": "int4",
    "int8": "int8",
    "uint8": "int8",
    "float16": "fp16",
    "bfloat16": "bf16",
    "float32": "fp32",
    "float64": "fp64",
}
PRECISION_SHARE = 0.1


class _Measured(TypedDict):
    method: int  # fidelity.METHOD: a result made by another method is measured again
    dataset: str  # the file name
    dataset_sha256: str
    task: str  # classification, embedding, tensor or generation: which measures apply


class Fidelity(_Measured, total=False):
    """How a converted variant follows its FP32 source (fleet.artifacts.fidelity). `error`
    when the variant could not be compared (it does not load, its outputs cannot be aligned):
    no measures then. Every task gets the tensor measures (worst sample, worst output);
    classifiers and decoders the top-1/top-5 agreement and, with labels, the accuracies and
    their drop (percentage points); embeddings the nearest-neighbour agreement."""

    error: str
    samples: float
    constant_output: bool  # the variant's outputs do not vary over the data set: broken
    cosine_min: float
    cosine_mean: float
    snr_db: float
    psnr_db: float
    max_abs_error: float
    agreement_top1: float
    agreement_top5: float
    neighbour_agreement: float
    accuracy_top1_reference: float
    accuracy_top1: float
    accuracy_drop_pp: float
    outputs: dict[str, dict[str, float]]  # per output name, when the model has several


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    """What a model file is. Every field but `declared` is measured (or added by conversion),
    so a suite cannot declare it; in `to_dict()` the declared fields sit beside them."""

    format: str  # "onnx" or "tflite", as the file's suffix says
    params: int  # weight elements, those computed at load included
    weight_types: dict[str, int]  # element type -> weight elements of that type
    weight_bytes: dict[str, int]  # element type -> bytes its weights take
    precision: str  # "fp32", "int8", "int4"...: see _precision()
    ops: dict[str, int]  # op type -> count, the most used first
    inputs: list[InputSpec]
    outputs: list[InputSpec]  # described as the inputs are
    opset: int | None = None  # ONNX only
    producer: str | None = None  # ONNX only: the exporter's name and version
    file_size_bytes: int
    model_size_mb: float  # the file and the weights computed at load, in MB (10^6 bytes)
    computed_weight_bytes: int | None = None  # weights the graph makes at load (not in the file)
    # A converted artifact's variant spec, and the name and sha256 of the model it came from.
    variant: str | None = None
    source: str | None = None
    source_sha256: str | None = None
    fidelity: Fidelity | None = None  # when converted with a data set
    declared: dict[str, str] = field(default_factory=dict)  # family, architecture, ...

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: the fields that are set, then the declared ones."""
        data = asdict(self)
        declared = data.pop("declared")
        return {**{k: v for k, v in data.items() if v is not None}, **declared}

    @classmethod
    def from_dict(cls, data: object) -> ModelCard:
        """The card `to_dict()` gave; ValueError for anything else (a damaged or stale file)."""
        if not isinstance(data, dict):
            raise ValueError("a model card is a JSON object")
        try:
            card = cls(
                **{k: v for k, v in data.items() if k in _MEASURED},
                declared={k: v for k, v in data.items() if k not in _MEASURED},
            )
        except TypeError as exc:  # a field without a default is missing
            raise ValueError(str(exc)) from None
        hints = get_type_hints(cls)
        wrong = [f.name for f in fields(cls) if not _fits(getattr(card, f.name), hints[f.name])]
        if wrong:
            raise ValueError(f"model card fields of the wrong type: {', '.join(wrong)}")
        return card


_MEASURED = {f.name for f in fields(ModelCard)} - {"declared"}


def _fits(value: object, hint: Any) -> bool:
    """Whether a value read from JSON is of type `hint`, one in the card's annotations."""
    args = get_args(hint)
    if get_origin(hint) in (Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if get_origin(hint) is list:
        return isinstance(value, list) and all(_fits(item, args[0]) for item in value)
    if get_origin(hint) is dict:
        return isinstance(value, dict) and all(
            _fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items()
        )
    if is_typeddict(hint):
        keys = get_type_hints(hint)
        return (
            isinstance(value, dict)
            and hint.__required_keys__ <= value.keys() <= keys.keys()
            and all(_fits(v, keys[k]) for k, v in value.items())
        )
    if value is None or isinstance(value, bool):  # isinstance counts a bool as an int
        return hint is type(value)
    if hint is float:  # JSON writes a whole float as 2.0, but a hand-made file may say 2
        return isinstance(value, int | float)
    return isinstance(value, hint)


def model_card(path: Path, declared: Mapping[str, str] | None = None) -> ModelCard:
    """Describe an .onnx or .tflite file; `declared` adds family, architecture, base_model..."""
    if not path.is_file():
        raise ConfigError(f"{path}: model file not found")
    if path.suffix == ".onnx":
        card = _onnx_card(path)
    elif path.suffix == ".tflite":
        card = _tflite_card(path)
    else:
        raise ConfigError(f"{path}: unknown model format; fleet reads .onnx and .tflite files")
    return declare(card, declared or {}, path)


def read_card(path: Path) -> ModelCard:
    """The stored card of a cached artifact (with fidelity and declared fields), else a new one."""
    sidecar = path.with_suffix(".json")
    try:
        stored = json.loads(sidecar.read_text())
        if stored.get("sha256") == path.stem:
            return ModelCard.from_dict(stored.get("card"))
    except (OSError, ValueError, AttributeError):
        pass  # not an artifact from the cache, or its card is damaged: describe the file itself
    return model_card(path)


def declare(card: ModelCard, declared: Mapping[str, str], path: Path) -> ModelCard:
    """The card with what the suite declares (family, architecture, base_model, ...) in place
    of what was declared before."""
    clash = sorted(set(declared) & _MEASURED)
    if clash:
        raise ConfigError(f"{path}: declared {clash} would replace measured model card fields")
    return replace(card, declared=dict(declared))


def _precision(weight_types: Mapping[str, int]) -> str:
    """The narrowest type holding PRECISION_SHARE of the weight elements (int32 biases of
    quantized ops don't count); a type fleet does not rank names itself if it is the most."""
    counted = {t: n for t, n in weight_types.items() if t != "int32"}
    total = sum(counted.values())
    if not total:
        return "unknown"
    for dtype, name in _PRECISION_OF_TYPE.items():
        if counted.get(dtype, 0) >= PRECISION_SHARE * total:
            return name
    return max(counted, key=lambda t: counted[t])


def _card(
    path: Path,
    weights: Sequence[Weight],
    ops: Counter[str],
    inputs: list[InputSpec],
    outputs: list[InputSpec],
    opset: int | None = None,
    producer: str | None = None,
) -> ModelCard:
    weight_types: Counter[str] = Counter()
    weight_bytes: Counter[str] = Counter()
    for weight in weights:
        weight_types[weight.dtype] += weight.elements
        weight_bytes[weight.dtype] += weight.bytes
    computed = sum(w.bytes for w in weights if w.computed)
    size = path.stat().st_size
    return ModelCard(
        format=path.suffix[1:],
        params=sum(weight_types.values()),
        weight_types=dict(sorted(weight_types.items())),
        weight_bytes=dict(sorted(weight_bytes.items())),
        precision=_precision(weight_types),
        ops=dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        inputs=inputs,
        outputs=outputs,
        opset=opset,
        producer=producer,
        file_size_bytes=size,
        model_size_mb=(size + computed) / MB,
        computed_weight_bytes=computed or None,
    )


# --- ONNX ------------------------------------------------------------------------------------


def load_onnx(path: Path) -> Any:
    """Load and check an ONNX model; an unreadable one is a ConfigError naming the file."""
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf, checker and OS errors all mean: not a usable model
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"{path}: not a readable ONNX model ({reason}); re-export it or check the path"
        ) from exc
    return model


def _onnx_card(path: Path) -> ModelCard:
    model = load_onnx(path)
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    return _card(
        path,
        onnx_weights(model),
        Counter(node.op_type for node in graph.node),
        [_onnx_io(v) for v in graph.input if v.name not in initializers],
        [_onnx_io(v) for v in graph.output],
        opset=next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0),
        producer=f"{model.producer_name} {model.producer_version}".strip(),
    )


def _onnx_io(value: Any) -> InputSpec:
    import onnx

    tensor = value.type.tensor_type
    shape: list[int | str | None] = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim
    ]
    return {
        "name": value.name,
        "shape": shape,
        "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
    }


# --- TFLite ----------------------------------------------------------------------------------


def load_tflite(path: Path) -> Any:
    """A LiteRT interpreter without the default (XNNPACK) delegate, so ops read as written."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        return Interpreter(
            model_path=str(path),
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
    except (ValueError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not a readable TFLite model ({reason})") from exc


def _tflite_card(path: Path) -> ModelCard:
    interpreter = load_tflite(path)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    # A private API, but the only way to read ops in the Python wheels; without it: no ops.
    ops_details: list[dict[str, Any]] = getattr(interpreter, "_get_ops_details", list)()
    produced = {int(i) for op in ops_details for i in op["outputs"]}
    consumed = {int(i) for op in ops_details for i in op["inputs"] if int(i) >= 0}
    graph_inputs = {d["index"] for d in interpreter.get_input_details()}
    weights = []
    for index in sorted(consumed - produced - graph_inputs):
        tensor = tensors[index]
        dtype = np.dtype(tensor["dtype"]).name
        size = int(np.prod(tensor["shape"])) if len(tensor["shape"]) else 1
        quantized = len(tensor["quantization_parameters"]["scales"]) > 0
        if size > 1 and (dtype in WEIGHT_DTYPES or (dtype == "int32" and quantized)):
            weights.append(Weight(dtype, size, size * np.dtype(dtype).itemsize))
    names = signature_names(interpreter)
    return _card(
        path,
        weights,
        Counter(str(op["op_name"]) for op in ops_details),
        [_tflite_io(d, names) for d in interpreter.get_input_details()],
        [_tflite_io(d, names) for d in interpreter.get_output_details()],
    )


def signature_names(interpreter: Any) -> dict[int, str]:
    """Tensor index -> signature name: the ONNX names onnx2tf kept (tensor names are TF's)."""
    names: dict[int, str] = {}
    for key in interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(key)
        for details in (runner.get_input_details(), runner.get_output_details()):
            names.update({d["index"]: name for name, d in details.items()})
    return names


def _tflite_io(detail: dict[str, Any], names: Mapping[int, str]) -> InputSpec:
    shape: list[int | str | None] = [int(s) if s >= 0 else "?" for s in detail["shape_signature"]]
    return {
        "name": names.get(detail["index"], detail["name"]),
        "shape": shape,
        "dtype": np.dtype(detail["dtype"]).name,
    }
