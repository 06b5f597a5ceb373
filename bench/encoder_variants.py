"""The pretrained MiniLM encoder's variants: size, fidelity against FP32 and latency.

    python bench/encoder_variants.py [--variants onnx:fp16,...] [--lengths 32,128] [--runs 200]

Converts (or finds in the artifact cache) each variant of zoo/pretrained.py's MiniLM with its
48 sentences as the data set (embedding task: cosine, SNR, nearest-neighbour agreement), then
times each ONNX variant with onnxruntime on one thread at every sequence length, batch 1, the
variants interleaved round by round so that a load change on this shared machine hits them
all alike; latency is the median of the rounds' medians, reported against FP32's.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from fleet.artifacts import Artifact, Variant, convert

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = (
    "onnx:fp32,onnx:fp16,onnx:int8-dynamic,onnx:int8-dynamic-per-channel,onnx:int8-static,"
    "onnx:int8-static-per-channel,onnx:int4,onnx:int4-block128"
)


def built() -> Path:
    spec = importlib.util.spec_from_file_location("zoo_pretrained", ROOT / "zoo" / "pretrained.py")
    assert spec is not None and spec.loader is not None
    module: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder: Path = module.ensure("minilm")
    return folder


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=VARIANTS)
    parser.add_argument("--lengths", default="32,128")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per variant and length")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    folder = built()
    made: dict[str, Artifact] = {}
    for spec in args.variants.split(","):
        made[spec] = convert(
            folder / "minilm_l6.onnx",
            Variant.parse(spec),
            calibration=folder / "minilm_calib.npz",
            dataset=folder / "minilm_sentences.npz",
            task="embedding",
        )
    with np.load(folder / "minilm_sentences.npz") as data:
        ids, mask = data["input_ids"][:1], data["attention_mask"][:1]
    sessions = {spec: session(a.path) for spec, a in made.items()}
    lengths = [int(n) for n in args.lengths.split(",")]
    medians: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for length in lengths:
            feeds = {"input_ids": ids[:, :length], "attention_mask": mask[:, :length]}
            for spec, sess in sessions.items():
                for _ in range(5):
                    sess.run(None, feeds)
                times = []
                for _ in range(args.runs // args.rounds):
                    start = time.perf_counter_ns()
                    sess.run(None, feeds)
                    times.append((time.perf_counter_ns() - start) / 1e6)
                medians.setdefault((spec, length), []).append(statistics.median(times))
    fp32 = made["onnx:fp32"].card.model_size_mb
    head = [f"p50 ms @{n}" for n in lengths] + [f"vs fp32 @{n}" for n in lengths]
    print("| variant | MB | cosine mean | cosine min | SNR dB | neighbours | " + " | ".join(head))
    for spec, artifact in made.items():
        f: Any = artifact.card.fidelity
        p50 = [statistics.median(medians[(spec, n)]) for n in lengths]
        base = [statistics.median(medians[("onnx:fp32", n)]) for n in lengths]
        cells = [
            str(artifact.variant),
            f"{artifact.card.model_size_mb:.1f} ({artifact.card.model_size_mb / fp32:.2f})",
            f"{f['cosine_mean']:.4f}",
            f"{f['cosine_min']:.4f}",
            f"{f['snr_db']:.1f}",
            f"{f['neighbour_agreement']:.2f}",
            *(f"{v:.2f}" for v in p50),
            *(f"{v / b:.2f}" for v, b in zip(p50, base, strict=True)),
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
