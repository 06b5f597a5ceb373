"""fleet-agent: runs a suite's cases on a device and streams results as JSON Lines.

Runs on Python 3.8+ with the standard library, numpy and an inference runtime only.
"""

__version__ = "0.1.0"
