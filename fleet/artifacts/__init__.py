"""Converted models: variants, the content-addressed artifact cache, model cards, fidelity."""

from fleet.artifacts.artifact import Artifact
from fleet.artifacts.cache import ArtifactCache
from fleet.artifacts.card import Fidelity, ModelCard, model_card, read_card
from fleet.artifacts.convert import Failed, convert, convert_all
from fleet.artifacts.fidelity import (
    BUDGETS,
    TASKS,
    FidelityBudgetError,
    check_fidelity_budgets,
    fidelity,
)
from fleet.artifacts.variant import KNOWN, Variant, parse_list

__all__ = [
    "BUDGETS",
    "KNOWN",
    "TASKS",
    "Artifact",
    "ArtifactCache",
    "Failed",
    "Fidelity",
    "FidelityBudgetError",
    "ModelCard",
    "Variant",
    "check_fidelity_budgets",
    "convert",
    "convert_all",
    "fidelity",
    "model_card",
    "parse_list",
    "read_card",
]
