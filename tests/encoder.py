"""A small sentence-encoder-shaped ONNX model for the tests of shapes and data sets.

Two int64 inputs of shape [batch, sequence] (`input_ids`, `attention_mask`), as transformer
encoders take them, and one embedding [batch, 16]: token embeddings, mean-pooled over the
mask, through a dense layer with tanh. It also reads the token at position 31, so it cannot
run on fewer than 32 tokens: a case fed a sequence of 1 fails in the runtime instead of
timing a number that means nothing (what fleet did with open dimensions before issue 13).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VOCAB = 100
HIDDEN = 16
MIN_TOKENS = 32


def encoder(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.normal(size=(VOCAB, HIDDEN)).astype(np.float32), "embed"),
        numpy_helper.from_array(rng.normal(size=(HIDDEN, HIDDEN)).astype(np.float32) / 4, "dense"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array(MIN_TOKENS - 1, np.int64), "last"),
    ]
    nodes = [
        helper.make_node("Gather", ["embed", "input_ids"], ["tokens"]),  # [B, S, H]
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask", "axis1"], ["mask3"]),  # [B, 1, S]
        helper.make_node("Transpose", ["mask3"], ["mask_t"], perm=[0, 2, 1]),  # [B, S, 1]
        helper.make_node("Mul", ["tokens", "mask_t"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),  # [B, H]
        helper.make_node("ReduceSum", ["mask_t", "axis1"], ["count"], keepdims=0),  # [B, 1]
        helper.make_node("Div", ["summed", "count"], ["pooled"]),
        helper.make_node("Gather", ["tokens", "last"], ["at_last"], axis=1),  # [B, H]
        helper.make_node("Add", ["pooled", "at_last"], ["mixed"]),
        helper.make_node("MatMul", ["mixed", "dense"], ["projected"]),
        helper.make_node("Tanh", ["projected"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info(
                "attention_mask", TensorProto.INT64, ["batch", "sequence"]
            ),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", HIDDEN])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def sentences(path: Path, count: int = 24, tokens: int = 40, seed: int = 1, **extra) -> Path:
    """A data set keyed by input name, the one form a two-input model can use: token ids and
    masks [count, tokens], each sentence padded after a random length of at least 32."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, size=(count, tokens)).astype(np.int64)
    lengths = rng.integers(MIN_TOKENS, tokens + 1, size=count)
    mask = (np.arange(tokens)[None, :] < lengths[:, None]).astype(np.int64)
    arrays = {"input_ids": ids * mask, "attention_mask": mask, **extra}
    np.savez(path, **arrays)
    return path
