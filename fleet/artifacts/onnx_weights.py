"""The weights of an ONNX graph: stored ones and those the graph computes when it loads.

Stored: initializers and Constant nodes (every `value*` form), in the main graph and in
subgraphs (If, Loop, Scan bodies). Computed: tensors a generator node makes from constants
alone, which a runtime folds into weights at load (ConstantOfShape and Expand with a constant
shape, RandomNormal and RandomUniform with a `shape`): a model can ship its weights that way
and then its file says nothing of their size. Quantization parameters (scales, zero points)
and shape constants are not weights; a tensor of one element is not either.

MatMulNBits (onnxruntime's weight-only int4/int8) stores its weight packed in uint8 blocks:
it counts as K×N elements of `int4` (or the node's bits) in the bytes the file holds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

# Inputs of ONNX quantization ops that hold scales and zero points, not weights.
QUANT_PARAM_INPUTS = {
    "QuantizeLinear": (1, 2),
    "DequantizeLinear": (1, 2),
    "MatMulInteger": (2, 3),
    "ConvInteger": (2, 3),
    "QLinearConv": (1, 2, 4, 5, 6, 7),
    "QLinearMatMul": (1, 2, 4, 5, 6, 7),
    "DynamicQuantizeLinear": (1, 2),
    "MatMulNBits": (1, 2, 3, 4),  # input 1, the packed weight, is counted from K, N and bits
}
WEIGHT_DTYPES = {"float32", "float16", "bfloat16", "float64", "int8", "uint8", "int4", "uint4"}
# Element sizes of types numpy has no dtype for.
_BITS = {"int4": 4, "uint4": 4, "bfloat16": 16, "float8e4m3fn": 8, "float8e5m2": 8}


@dataclass(frozen=True)
class Weight:
    dtype: str  # numpy's name, or ONNX's lower-cased where numpy has none (bfloat16, int4)
    elements: int
    bytes: int
    computed: bool = False  # made when the model loads, not stored in the file


def onnx_weights(model: Any) -> list[Weight]:
    """Every weight tensor of a loaded ModelProto."""
    weights: list[Weight] = []
    for graph in _graphs(model.graph):
        weights += _graph_weights(graph)
    return weights


def _graphs(graph: Any) -> Iterator[Any]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == attr.GRAPH:
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _graph_weights(graph: Any) -> list[Weight]:
    import onnx

    skip = {
        node.input[i]
        for node in graph.node
        for i in QUANT_PARAM_INPUTS.get(node.op_type, ())
        if i < len(node.input)
    }
    # Dynamic quantization rescales MatMulInteger's result by the activation's scale times
    # the weight's (a vector when per-channel): that weight scale is no weight either.
    scales = {n.output[1] for n in graph.node if n.op_type == "DynamicQuantizeLinear"}
    skip |= {
        other
        for node in graph.node
        if node.op_type == "Mul" and scales & set(node.input)
        for other in node.input
        if other not in scales
    }
    dequantized = {node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    stored: dict[str, Any] = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            stored[node.output[0]] = onnx.helper.get_attribute_value(node.attribute[0])
    values = {name: _array(tensor) for name, tensor in stored.items()}
    weights = []
    for name, tensor in stored.items():
        dtype, elements = _describe(tensor)
        if name in skip or elements <= 1:
            continue
        if dtype in WEIGHT_DTYPES or name in dequantized:
            weights.append(Weight(dtype, elements, _nbytes(dtype, elements)))
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            weights.append(_nbits(node, stored))
        computed = _generated(node, stored, values)
        if computed is not None and node.output[0] not in skip:
            weights.append(computed)
    return weights


def _describe(tensor: Any) -> tuple[str, int]:
    """(dtype, elements) of a TensorProto, or of a Constant's value_float(s)/value_int(s)."""
    import onnx

    if isinstance(tensor, onnx.TensorProto):
        return _dtype_name(tensor.data_type), math.prod(tensor.dims)
    if isinstance(tensor, list):
        kind = "float32" if tensor and isinstance(tensor[0], float) else "int64"
        return kind, len(tensor)
    if isinstance(tensor, float):
        return "float32", 1
    return "other", 1  # an int, a string, a sparse tensor: never a weight here


def _dtype_name(data_type: int) -> str:
    import onnx

    name = str(onnx.helper.tensor_dtype_to_np_dtype(data_type).name)
    if name in ("object", "void") or data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return str(onnx.TensorProto.DataType.Name(data_type)).lower()
    return name


def _nbytes(dtype: str, elements: int) -> int:
    bits = _BITS.get(dtype) or np.dtype(dtype).itemsize * 8
    return (elements * bits + 7) // 8


def _array(tensor: Any) -> np.ndarray | None:
    """A small integer constant's values (to read a shape), else None."""
    import onnx

    if isinstance(tensor, list):
        return np.asarray(tensor)
    small = isinstance(tensor, onnx.TensorProto) and math.prod(tensor.dims) <= 16
    if small and tensor.data_type == onnx.TensorProto.INT64:
        return np.asarray(onnx.numpy_helper.to_array(tensor))
    return None


def _nbits(node: Any, stored: dict[str, Any]) -> Weight:
    import onnx

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    bits = int(attrs.get("bits", 4))
    packed = stored.get(node.input[1])
    elements = int(attrs["K"]) * int(attrs["N"])
    size = math.prod(packed.dims) if isinstance(packed, onnx.TensorProto) else elements * bits // 8
    return Weight(f"int{bits}", elements, size)


def _generated(
    node: Any, stored: dict[str, Any], values: dict[str, np.ndarray | None]
) -> Weight | None:
    """The tensor a generator node makes from constants alone, else None."""
    import onnx

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    shape: Any = None
    dtype = "float32"
    if node.op_type == "ConstantOfShape" and node.input:
        shape = values.get(node.input[0])
        value = attrs.get("value")
        if isinstance(value, onnx.TensorProto):
            dtype = _dtype_name(value.data_type)
    elif node.op_type in ("RandomNormal", "RandomUniform"):
        shape = attrs.get("shape")
        if "dtype" in attrs:
            dtype = _dtype_name(int(attrs["dtype"]))
    elif node.op_type == "Expand" and len(node.input) == 2 and node.input[0] in stored:
        shape = values.get(node.input[1])
        dtype = _describe(stored[node.input[0]])[0]
    if shape is None or dtype not in WEIGHT_DTYPES:
        return None
    elements = math.prod(int(d) for d in np.asarray(shape).reshape(-1))
    if elements <= 1:
        return None
    return Weight(dtype, elements, _nbytes(dtype, elements), computed=True)
