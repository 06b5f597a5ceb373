"""Converted models: variants, the content-addressed artifact cache, model cards, fidelity."""

from fleet.artifacts.artifact import Artifact
from fleet.artifacts.cache import ArtifactCache
from fleet.artifacts.card import Fidelity, ModelCard, model_card, read_card
from fleet.artifacts.convert import convert, convert_all
from fleet.artifacts.fidelity import FidelityBudgetError, check_fidelity_budget, fidelity
from fleet.artifacts.variant import KNOWN, Variant, parse_list

__all__ = [
    "KNOWN",
    "Artifact",
    "ArtifactCache",
    "Fidelity",
    "FidelityBudgetError",
    "ModelCard",
    "Variant",
    "check_fidelity_budget",
    "convert",
    "convert_all",
    "fidelity",
    "model_card",
    "parse_list",
    "read_card",
]
