"""Conversion cost and fidelity of the zoo's variant matrix, and what the artifact cache saves.

For each zoo model and variant, in a fresh artifact cache: the wall time of the request that
ran the converter (baseline), the time of the same request again in a new cache object (a
cache hit: hashing, the index, the stored card), their ratio, the file size against FP32,
and the fidelity measured at conversion. TFLite variants come from one onnx2tf run, so the
first TFLite request of a model carries the whole run and the others are hits.

    python bench/convert_variants.py [--models digits_mlp,digits_cnn,tiny_gpt]

The converter environment must exist (any TFLite conversion builds it once).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from fleet.artifacts import ArtifactCache, Variant, convert

ZOO = Path(__file__).resolve().parents[1] / "zoo"
VARIANTS = [
    "onnx:fp16",
    "onnx:int8-static",
    "onnx:int8-dynamic",
    "tflite:fp32",
    "tflite:fp16",
    "tflite:int8-static",
    "tflite:int8-dynamic",
]


def zoo_inputs(name: str, work: Path) -> tuple[Path, Path, Path]:
    """source, calibration set, test set of a zoo model."""
    if name == "tiny_gpt":
        calibration = work / "gpt_calib.npz"
        with np.load(ZOO / "tiny_gpt_prompts.npz") as prompts:
            np.savez(calibration, tokens=prompts["tokens"][:16])
        return ZOO / "tiny_gpt.onnx", calibration, ZOO / "tiny_gpt_prompts.npz"
    prefix = "digits_cnn" if name == "digits_cnn" else "digits"
    return ZOO / f"{name}.onnx", ZOO / f"{prefix}_calib.npz", ZOO / f"{prefix}_test.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits_mlp,digits_cnn,tiny_gpt")
    args = parser.parse_args()
    print(
        "| model | variant | converter s | cache hit s | ratio | size vs fp32 "
        "| agreement | cosine min | drop pp |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as scratch:
            work = Path(scratch)
            source, calibration, dataset = zoo_inputs(name, work)
            fp32_size = source.stat().st_size
            for spec in VARIANTS:
                variant = Variant.parse(spec)
                if spec == "tflite:int8-static" and name == "tiny_gpt":
                    continue  # token ids: no float input to calibrate (a ConfigError)
                cache = ArtifactCache(work / "artifacts")
                start = time.perf_counter()
                artifact = convert(
                    source, variant, calibration=calibration, dataset=dataset, cache=cache
                )
                first = time.perf_counter() - start
                again = ArtifactCache(work / "artifacts")
                start = time.perf_counter()
                convert(source, variant, calibration=calibration, dataset=dataset, cache=again)
                hit = time.perf_counter() - start
                ran = cache.stats.conversions > 0
                converter = f"{first:.2f}" if ran else f"({first:.2f}: same onnx2tf run)"
                ratio = f"{first / hit:.0f}x" if ran else "-"
                measured = artifact.card.fidelity
                assert measured is not None  # converted with a data set
                drop = measured.get("accuracy_drop_pp")
                print(
                    f"| {name} | {spec} | {converter} | {hit:.3f} | {ratio}"
                    f" | {artifact.path.stat().st_size / fp32_size:.2f}"
                    f" | {measured['agreement_top1']:.4f} | {measured['cosine_min']:.4f}"
                    f" | {'-' if drop is None else f'{drop:+.2f}'} |"
                )


if __name__ == "__main__":
    main()
