"""fleet: hardware-in-the-loop test fleet controller for ML inference."""

__version__ = "0.1.0"
