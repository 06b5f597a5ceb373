"""Model cards: what a model file is, read from the file itself plus what the suite declares.

A card is a plain JSON-able dict, so it can be stored beside an artifact and attached to
results. `params` counts the elements of weight tensors: constant float or 8-bit tensors
(and int32 biases of quantized ops), never shape constants or quantization scales.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fleet.errors import ConfigError

MB = 1_000_000  # model_size_mb is in megabytes (10^6 bytes), as embedded budgets are quoted

# Weight tensor types by the element counts they hold -> the precision a person would name.
_PRECISION_OF_TYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}
# Inputs of ONNX quantization ops that hold scales and zero points, not weights.
_QUANT_PARAM_INPUTS = {
    "QuantizeLinear": (1, 2),
    "DequantizeLinear": (1, 2),
    "MatMulInteger": (2, 3),
    "ConvInteger": (2, 3),
    "QLinearConv": (1, 2, 4, 5, 6, 7),
    "QLinearMatMul": (1, 2, 4, 5, 6, 7),
}
# Fields a card measures from the file (plus what conversion adds); a suite cannot declare them.
_MEASURED = {
    "format",
    "params",
    "weight_types",
    "precision",
    "ops",
    "inputs",
    "outputs",
    "opset",
    "producer",
    "file_size_bytes",
    "model_size_mb",
    "variant",
    "source",
    "source_sha256",
    "fidelity",
}
_WEIGHT_DTYPES = {"float32", "float16", "bfloat16", "float64", "int8", "uint8", "int4", "uint4"}


def model_card(path: Path, declared: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Describe an .onnx or .tflite file; `declared` adds family, architecture, base_model..."""
    if not path.is_file():
        raise ConfigError(f"{path}: model file not found")
    if path.suffix == ".onnx":
        card = _onnx_card(path)
    elif path.suffix == ".tflite":
        card = _tflite_card(path)
    else:
        raise ConfigError(f"{path}: unknown model format; fleet reads .onnx and .tflite files")
    size = path.stat().st_size
    card["file_size_bytes"] = size
    card["model_size_mb"] = size / MB
    return declare(card, declared or {}, path)


def read_card(path: Path) -> dict[str, Any]:
    """The stored card of a cached artifact (with fidelity and declared fields), else a new one."""
    sidecar = path.with_suffix(".json")
    try:
        stored = json.loads(sidecar.read_text())
        if stored.get("sha256") == path.stem and isinstance(stored.get("card"), dict):
            return dict(stored["card"])
    except (OSError, ValueError, AttributeError):
        pass  # not an artifact from the cache: describe the file itself
    return model_card(path)


def declare(card: dict[str, Any], declared: Mapping[str, str], path: Path) -> dict[str, Any]:
    """Add what the suite declares (family, architecture, base_model, ...) to a card."""
    clash = sorted(set(declared) & _MEASURED)
    if clash:
        raise ConfigError(f"{path}: declared {clash} would replace measured model card fields")
    return {**card, **declared}


def _precision(weight_types: Mapping[str, int]) -> str:
    """The type holding most weight elements names the precision (int32 biases don't count)."""
    counted = {t: n for t, n in weight_types.items() if t != "int32"}
    if not counted:
        return "unknown"
    dominant = max(counted, key=lambda t: counted[t])
    return _PRECISION_OF_TYPE.get(dominant, dominant)


def _card(
    fmt: str,
    weights: Sequence[tuple[str, int]],
    ops: Counter[str],
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
) -> dict[str, Any]:
    weight_types: Counter[str] = Counter()
    for dtype, count in weights:
        weight_types[dtype] += count
    return {
        "format": fmt,
        "params": sum(weight_types.values()),
        "weight_types": dict(sorted(weight_types.items())),
        "precision": _precision(weight_types),
        "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "inputs": inputs,
        "outputs": outputs,
    }


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


def _onnx_card(path: Path) -> dict[str, Any]:
    import onnx

    model = load_onnx(path)
    graph = model.graph
    skip = {
        node.input[i]
        for node in graph.node
        for i in _QUANT_PARAM_INPUTS.get(node.op_type, ())
        if i < len(node.input)
    }
    dequantized = {node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    constants = [(t.name, t) for t in graph.initializer] + [
        (node.output[0], attr.t)
        for node in graph.node
        if node.op_type == "Constant"
        for attr in node.attribute
        if attr.name == "value"
    ]
    weights = []
    for name, tensor in constants:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).name
        if dtype == "object":  # a bfloat16/float8 without a numpy type: name it by ONNX
            dtype = onnx.TensorProto.DataType.Name(tensor.data_type).lower()
        size = int(np.prod(tensor.dims)) if tensor.dims else 1
        if name in skip or size <= 1:
            continue
        if dtype in _WEIGHT_DTYPES or name in dequantized:
            weights.append((dtype, size))
    initializers = {t.name for t in graph.initializer}
    card = _card(
        "onnx",
        weights,
        Counter(node.op_type for node in graph.node),
        [_onnx_io(v) for v in graph.input if v.name not in initializers],
        [_onnx_io(v) for v in graph.output],
    )
    card["opset"] = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    card["producer"] = f"{model.producer_name} {model.producer_version}".strip()
    return card


def _onnx_io(value: Any) -> dict[str, Any]:
    import onnx

    tensor = value.type.tensor_type
    shape: list[int | str] = [
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


def _tflite_card(path: Path) -> dict[str, Any]:
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
        if size > 1 and (dtype in _WEIGHT_DTYPES or (dtype == "int32" and quantized)):
            weights.append((dtype, size))
    names = signature_names(interpreter)
    return _card(
        "tflite",
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


def _tflite_io(detail: dict[str, Any], names: Mapping[int, str]) -> dict[str, Any]:
    return {
        "name": names.get(detail["index"], detail["name"]),
        "shape": [int(s) if s >= 0 else "?" for s in detail["shape_signature"]],
        "dtype": np.dtype(detail["dtype"]).name,
    }
