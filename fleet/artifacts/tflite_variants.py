"""ONNX -> TFLite variants with onnx2tf, run in the converter environment as a subprocess.

One onnx2tf run writes several files; fleet keeps these (checked on onnx2tf 1.29.24):
    *_float32.tflite             tflite:fp32
    *_float16.tflite             tflite:fp16          float16 weights, float32 compute and IO
    *_dynamic_range_quant.tflite tflite:int8-dynamic  int8 weights, float activations (-odrqt)
    *_integer_quant.tflite       tflite:int8-static   int8 weights and activations, every op in
                                 int8, QUANTIZE/DEQUANTIZE at the edges, float32 IO (-oiqt)
onnx2tf's *_full_integer_quant.tflite (int8 IO) is not used: with float IO every variant
takes the same data as the FP32 model, which is what a comparison across variants needs.
The same holds for layout: `-kat` keeps each input in ONNX's layout (NCHW for images) with a
transpose inside the model, instead of onnx2tf's default of NHWC inputs. `-rtpo Erf` builds
Erf (GELU) from builtin ops: as a TensorFlow "Flex" op it would not load in LiteRT (seen
with the zoo's tiny decoder).

onnx2tf converts dynamic dimensions other than the batch badly or not at all (a MiniLM
encoder with [batch, sequence] inputs fails in its Reshapes): such a model is converted at
fixed shapes (`-ois NAME:1,D1,...`), batch 1 and the other dimensions of the samples given
(the data set, else the calibration set), so its TFLite variants run at that shape only.

Full-integer calibration needs float inputs (convert() refuses others) and always passes the
caller's samples with `-cind NAME FILE MEAN STD` (mean 0, std 1: the samples are used as
given); without `-cind` onnx2tf would download calibration images from the internet.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fleet.artifacts.converter_env import CONVERTER_VERSION, converter_python, last_lines
from fleet.artifacts.data import Samples
from fleet.errors import ConversionError
from fleet_agent.protocol import InputSpec

# Output file suffix -> variant spec it becomes.
OUTPUTS = {
    "_float32.tflite": "tflite:fp32",
    "_float16.tflite": "tflite:fp16",
    "_dynamic_range_quant.tflite": "tflite:int8-dynamic",
    "_integer_quant.tflite": "tflite:int8-static",
}
TIMEOUT_S = 3600


def version() -> str:
    return CONVERTER_VERSION


# The flags that shape the output; each run adds the input names and calibration files.
KEEP_LAYOUT = ["-odrqt", "-rtpo", "Erf", "-kat"]  # -kat takes the input names
FULL_INTEGER = ["-oiqt", "-qt", "per-channel"]
MEAN_STD = ["[0.0]", "[1.0]"]


def options(calibrated: bool, shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """What shapes the output (paths left out), for the cache key and the sidecar."""
    flags = [*KEEP_LAYOUT, "INPUTS", *_fixed(shapes)]
    if calibrated:
        flags += [*FULL_INTEGER, "-cind", "INPUT", "SAMPLES.npy", *MEAN_STD]
    return {"flags": flags}


def needs_fixed_shapes(inputs: Sequence[InputSpec]) -> bool:
    """Whether some input has a dynamic dimension besides the batch."""
    return any(not isinstance(dim, int) for spec in inputs for dim in spec["shape"][1:])


def fixed_shapes(inputs: Sequence[InputSpec], samples: Samples) -> dict[str, list[int]]:
    """Batch 1 and the samples' other dimensions, for every input."""
    return {spec["name"]: [1, *samples.feeds[spec["name"]].shape[1:]] for spec in inputs}


def _fixed(shapes: Mapping[str, Sequence[int]] | None) -> list[str]:
    if not shapes:
        return []
    return ["-ois", *(f"{name}:{','.join(map(str, dims))}" for name, dims in shapes.items())]


def convert(
    source: Path,
    inputs: Sequence[InputSpec],
    calibration: Samples | None,
    workdir: Path,
    describe: str,
    log_path: Path,
    wanted: str,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Path]:
    """Run onnx2tf once; variant spec -> file it wrote. `describe` names it in errors."""
    python = converter_python()
    env = {
        **os.environ,
        # onnx2tf runs the `onnxsim` command of its venv; off PATH it silently skips simplifying.
        "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "CUDA_VISIBLE_DEVICES": "-1",
        "TF_CPP_MIN_LOG_LEVEL": "1",
    }
    names = [i["name"] for i in inputs]
    # onnx2tf simplifies its input file in place: give it a copy, never the source or a
    # cached artifact (whose name is its sha256).
    staged = workdir / source.name
    shutil.copyfile(source, staged)
    argv = [str(python), "-m", "onnx2tf", "-i", str(staged), "-o", str(workdir)]
    argv += [*KEEP_LAYOUT, *names, *_fixed(shapes)]
    if calibration is not None:
        argv += FULL_INTEGER
        for index, name in enumerate(names):
            npy = workdir / f"calibration_{index}.npy"
            np.save(npy, np.ascontiguousarray(calibration.feeds[name], dtype=np.float32))
            argv += ["-cind", name, str(npy), *MEAN_STD]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        try:
            result = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                env=env,
                timeout=TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            raise ConversionError(
                f"{describe}: onnx2tf ran over {TIMEOUT_S} s; log: {log_path}"
            ) from exc
    # onnx2tf names its outputs after the source file's stem.
    produced = {
        spec: workdir / f"{source.stem}{suffix}"
        for suffix, spec in OUTPUTS.items()
        if (workdir / f"{source.stem}{suffix}").is_file()
    }
    if result.returncode != 0 or wanted not in produced:
        raise ConversionError(
            f"{describe}: onnx2tf failed (exit {result.returncode}): "
            f"{last_lines(log_path.read_text(errors='replace'))}; log: {log_path}"
        )
    return produced
