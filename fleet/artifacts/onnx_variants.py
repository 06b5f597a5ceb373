"""ONNX -> ONNX variants with onnxruntime's own tools, in this process.

fp16: weights and activations in float16, inputs and outputs kept float32 (Cast at the edges)
so every variant takes the same data. int8 static: QDQ format, int8 weights and activations,
MinMax calibration on the given samples, for the ops in STATIC_OPS: convolutions, matrix
products and the activations and pools between them. Other ops stay float: quantizing all of
them (onnxruntime's default) took the zoo's tiny decoder from 95% to 11% top-1 agreement,
because an attention mask's -inf and softmax do not calibrate to a range. int8 dynamic: int8
weights, activations quantized at run time (no calibration).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fleet.artifacts.data import Samples, batches

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
}


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

    quant_pre_process(str(source), str(target))
    return target


def to_int8_dynamic(source: Path, work: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    options = OPTIONS["int8-dynamic"]
    quantize_dynamic(
        _pre_process(source, work),
        target,
        weight_type=QuantType[options["weight_type"]],
        per_channel=options["per_channel"],
    )


def to_int8_static(
    source: Path, work: Path, target: Path, calibration: Samples, first_dim: object
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
        per_channel=options["per_channel"],
        op_types_to_quantize=options["op_types_to_quantize"],
    )
