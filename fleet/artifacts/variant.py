"""What a model is converted to: a format, a precision and how it is quantized.

A variant's spec string names everything that changes its bytes, so two variants that differ
in any way are two series in results (`Variant.spec()`):

    FORMAT:PRECISION[-MODE][-per-channel][-blockN]

- int8 MODE: "static" calibrates activations on data (full-integer), "dynamic" quantizes
  weights ahead and activations at run time. No mode means static when calibration data is
  given, dynamic otherwise; the converted artifact always names the mode it got.
- `-per-channel` (ONNX int8): one scale per output channel of each weight instead of one per
  tensor. LiteRT's int8 files are per-channel already (onnx2tf's default), so TFLite takes
  no such option.
- int4 (ONNX) is weight-only: MatMul weights in 4-bit blocks of N values along the reduced
  axis, each block with its own scale (onnxruntime's MatMulNBits), activations in float.
  `-blockN` sets N (16, 32, 64, 128 or 256); without it the artifact names the default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fleet.errors import ConfigError

FORMATS = ("onnx", "tflite")
PRECISIONS = ("fp32", "fp16", "int8", "int4")
INT8_MODES = ("static", "dynamic")
BLOCK_SIZES = (16, 32, 64, 128, 256)
DEFAULT_BLOCK_SIZE = 32  # finer than onnxruntime's 128: a 384-wide MiniLM row is 12 blocks
PER_CHANNEL = "per-channel"
_SPEC = re.compile(
    r"(?P<format>[a-z0-9]+):(?P<precision>[a-z0-9]+)"
    r"(?:-(?P<mode>static|dynamic))?(?P<per_channel>-per-channel)?(?:-block(?P<block>\d+))?"
)


@dataclass(frozen=True)
class Variant:
    format: str
    precision: str
    mode: str | None = None
    per_channel: bool = False
    block_size: int | None = None

    def __post_init__(self) -> None:
        onnx_int8 = self.format == "onnx" and self.precision == "int8"
        if (
            self.format not in FORMATS
            or self.precision not in PRECISIONS
            or (self.mode is not None and (self.precision != "int8" or self.mode not in INT8_MODES))
            or (self.precision == "int4" and self.format != "onnx")
            or (self.per_channel and not onnx_int8)
            or (
                self.block_size is not None
                and (self.precision != "int4" or self.block_size not in BLOCK_SIZES)
            )
        ):
            raise ConfigError(f"unknown variant {self.spec()!r}; {known_text()}")

    @classmethod
    def parse(cls, text: str) -> Variant:
        """'tflite:int8' -> Variant("tflite", "int8"); 'onnx:int8-dynamic' sets the mode,
        'onnx:int8-static-per-channel' per-channel scales, 'onnx:int4-block64' the block."""
        match = _SPEC.fullmatch(text.strip())
        if match is None:
            raise ConfigError(
                f"unknown variant {text!r}: write FORMAT:PRECISION like 'tflite:int8';"
                f" {known_text()}"
            )
        block = match["block"]
        return cls(
            match["format"],
            match["precision"],
            match["mode"],
            per_channel=match["per_channel"] is not None,
            block_size=int(block) if block is not None else None,
        )

    def spec(self) -> str:
        spec = f"{self.format}:{self.precision}"
        if self.mode:
            spec += f"-{self.mode}"
        if self.per_channel:
            spec += f"-{PER_CHANNEL}"
        if self.block_size is not None:
            spec += f"-block{self.block_size}"
        return spec

    def __str__(self) -> str:
        return self.spec()


def _known() -> tuple[str, ...]:
    specs = []
    for fmt in FORMATS:
        for precision in PRECISIONS:
            if precision == "int4" and fmt != "onnx":
                continue
            specs.append(f"{fmt}:{precision}")
            if precision == "int8":
                specs += [f"{fmt}:int8-{mode}" for mode in INT8_MODES]
                if fmt == "onnx":
                    specs.append(f"onnx:int8-{PER_CHANNEL}")
                    specs += [f"onnx:int8-{mode}-{PER_CHANNEL}" for mode in INT8_MODES]
            if precision == "int4":
                specs += [f"onnx:int4-block{size}" for size in BLOCK_SIZES]
    return tuple(specs)


KNOWN = _known()


def known_text() -> str:
    return f"known variants: {', '.join(KNOWN)}"


def parse_list(text: str) -> list[Variant]:
    """A comma-separated list, as `fleet convert --to` takes it."""
    variants = [Variant.parse(part) for part in text.split(",") if part.strip()]
    if not variants:
        raise ConfigError(f"no variants in {text!r}; {known_text()}")
    return variants
