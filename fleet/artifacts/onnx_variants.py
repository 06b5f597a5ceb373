"""ONNX -> ONNX variants with onnxruntime's own tools, in this process.

fp16: weights and activations in float16, inputs and outputs kept float32 (Cast at the edges)
so every variant takes the same data. int8 static: QDQ format, int8 weights and activations,
MinMax calibration on the given samples, for the ops in STATIC_OPS: convolutions, matrix
products and the activations and pools between them. Other ops stay float: quantizing all of
them (onnxruntime's default) took the zoo's tiny decoder from 95% to 11% top-1 agreement,
because an attention mask's -inf and softmax do not calibrate to a range. int8 dynamic: int8
weights, activations quantized at run time (no calibration). Both int8 modes take one scale
per weight tensor unless the variant asks for per-channel scales. int4: weight-only, every
MatMul's constant weight in blocks of `block_size` values along its reduced axis, symmetric
4-bit with a float scale per block (onnxruntime's MatMulNBits quantizer and kernel); the
other ops and every activation stay float.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fleet.artifacts.data import Samples, batches
from fleet.artifacts.variant import Variant

STATIC_OPS = [
    "Conv",
    "MatMul",
    "Gemm",
    "Relu",
    "Clip",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
]
OPTIONS: dict[str, dict[str, Any]] = {
    "fp16": {"keep_io_types": True},
    "int8-static": {
        "quant_format": "QDQ",
        "activation_type": "QInt8",
        "weight_type": "QInt8",
        "calibrate_method": "MinMax",
        "per_channel": False,
        "op_types_to_quantize": STATIC_OPS,
    },
    "int8-dynamic": {"weight_type": "QInt8", "per_channel": False},
    "int4": {"bits": 4, "is_symmetric": True, "op_types_to_quantize": ["MatMul"]},
}


def options(variant: Variant) -> dict[str, Any]:
    """What the onnxruntime tool is asked for: the cache key's options and the call's."""
    if variant.precision == "int4":
        return {**OPTIONS["int4"], "block_size": variant.block_size}
    if variant.precision == "int8":
        return {**OPTIONS[f"int8-{variant.mode}"], "per_channel": variant.per_channel}
    return OPTIONS[variant.precision]


def version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def weights_as_constants(source: Path, work: Path) -> Path:
    """Old exporters (IR 3, opset <= 8 era) list every weight as a graph input too. The
    converters then treat weights as inputs (fp16 keeps them float32; the quantizers drop
    them and fail the checker). From IR 4 on, weights need not be inputs: drop them there."""
    import onnx

    model = onnx.load(str(source))
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) == len(model.graph.input):
        return source
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.ir_version = max(model.ir_version, 4)
    cleaned = work / "weights-as-constants.onnx"
    onnx.save(model, str(cleaned))
    return cleaned


def to_fp16(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = convert_float_to_float16(onnx.load(str(source)), **OPTIONS["fp16"])
    wrapped = OnnxModel(model)
    wrapped.topological_sort()  # the IO casts are appended last; the ONNX checker wants order
    onnx.save(wrapped.model, str(target))


def _pre_process(source: Path, target: Path) -> Path:
    """onnxruntime's recommended step before quantizing: shape inference and graph cleanup."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(target))
    except Exception:  # the symbolic pass gives up on some exports' Reshapes
        # ("Incomplete symbolic shape inference" on a torch-exported MiniLM): ONNX's own
        # shape inference and the graph cleanup still apply.
        quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
    return target


def to_int4(source: Path, target: Path, block_size: int) -> None:
    import onnx

    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ModuleNotFoundError as exc:  # it imports onnx_ir, which onnxruntime does not require
        raise ValueError(
            f"onnxruntime's 4-bit quantizer needs {exc.name}: pip install 'fleet[int4]'"
        ) from exc

    options = OPTIONS["int4"]
    # The quantizer logs a line per node at INFO, on a handler of its own.
    logging.getLogger(MatMulNBitsQuantizer.__module__).setLevel(logging.WARNING)
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(source)),
        bits=options["bits"],
        block_size=block_size,
        is_symmetric=options["is_symmetric"],
        op_types_to_quantize=tuple(options["op_types_to_quantize"]),
    )
    quantizer.process()
    packed = sum(node.op_type == "MatMulNBits" for node in quantizer.model.model.graph.node)
    if not packed:
        raise ValueError(
            "no MatMul with a constant 2-D weight to pack in 4 bits (Gemm and Conv stay as they"
            " are): onnx:int4 would be the FP32 model; use onnx:int8 for this one"
        )
    quantizer.model.save_model_to_file(str(target), use_external_data_format=False)


def to_int8_dynamic(source: Path, work: Path, target: Path, per_channel: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    options = OPTIONS["int8-dynamic"]
    quantize_dynamic(
        _pre_process(source, work),
        target,
        weight_type=QuantType[options["weight_type"]],
        per_channel=per_channel,
    )


def to_int8_static(
    source: Path,
    work: Path,
    target: Path,
    calibration: Samples,
    first_dim: object,
    per_channel: bool,
) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # untyped base class
        def __init__(self) -> None:
            self._parts: Iterator[Mapping[str, np.ndarray]] = (
                {name: array[part] for name, array in calibration.feeds.items()}
                for part in batches(calibration.count, first_dim)
            )

        def get_next(self) -> Mapping[str, np.ndarray] | None:
            return next(self._parts, None)

    # Built from OPTIONS, which is also the cache key: the two cannot drift apart.
    options = OPTIONS["int8-static"]
    quantize_static(
        _pre_process(source, work),
        target,
        Reader(),
        quant_format=QuantFormat[options["quant_format"]],
        activation_type=QuantType[options["activation_type"]],
        weight_type=QuantType[options["weight_type"]],
        calibrate_method=CalibrationMethod[options["calibrate_method"]],
        per_channel=per_channel,
        op_types_to_quantize=options["op_types_to_quantize"],
    )
