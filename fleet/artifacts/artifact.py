"""One converted model file, named by its sha256, with its model card."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fleet.artifacts.card import ModelCard
from fleet.artifacts.variant import Variant


@dataclass(frozen=True)
class Artifact:
    path: Path  # <cache>/<sha256>.<onnx|tflite>
    sha256: str
    variant: Variant  # as converted: an int8 variant always names its mode
    card: ModelCard
    source_sha256: str
