"""What a model is converted to: a format, a precision and, for int8, how it is quantized."""

from __future__ import annotations

from dataclasses import dataclass

from fleet.errors import ConfigError

FORMATS = ("onnx", "tflite")
PRECISIONS = ("fp32", "fp16", "int8")
# int8 only: "static" calibrates activations on data (full-integer), "dynamic" quantizes
# weights ahead and activations at run time. No mode means: static when calibration data is
# given, dynamic otherwise; the converted artifact always names the mode it got.
INT8_MODES = ("static", "dynamic")


@dataclass(frozen=True)
class Variant:
    format: str
    precision: str
    mode: str | None = None

    def __post_init__(self) -> None:
        if (
            self.format not in FORMATS
            or self.precision not in PRECISIONS
            or (self.mode is not None and (self.precision != "int8" or self.mode not in INT8_MODES))
        ):
            raise ConfigError(
                f"unknown variant {self.spec()!r}; known variants: {', '.join(KNOWN)}"
            )

    @classmethod
    def parse(cls, text: str) -> Variant:
        """'tflite:int8' -> Variant("tflite", "int8"); 'onnx:int8-dynamic' sets the mode."""
        fmt, sep, rest = text.strip().partition(":")
        precision, dash, mode = rest.partition("-")
        if not sep or not precision or (dash and not mode):
            raise ConfigError(
                f"unknown variant {text!r}: write FORMAT:PRECISION like 'tflite:int8';"
                f" known variants: {', '.join(KNOWN)}"
            )
        return cls(fmt, precision, mode or None)

    def spec(self) -> str:
        base = f"{self.format}:{self.precision}"
        return f"{base}-{self.mode}" if self.mode else base

    def __str__(self) -> str:
        return self.spec()


KNOWN = tuple(
    f"{fmt}:{precision}{suffix}"
    for fmt in FORMATS
    for precision in PRECISIONS
    for suffix in ([""] + [f"-{m}" for m in INT8_MODES] if precision == "int8" else [""])
)


def parse_list(text: str) -> list[Variant]:
    """A comma-separated list, as `fleet convert --to` takes it."""
    variants = [Variant.parse(part) for part in text.split(",") if part.strip()]
    if not variants:
        raise ConfigError(f"no variants in {text!r}; known variants: {', '.join(KNOWN)}")
    return variants
