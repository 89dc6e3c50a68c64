"""Helpers of the knowledge tests: unit vectors chosen by hand where a test is about grouping,
not about what MiniLM makes of a sentence."""

from __future__ import annotations

import numpy as np

from conversations.knowledge import vectors


def unit(*weights: float) -> vectors.Matrix:
    """A (1, DIM) unit row with ``weights`` in its first coordinates."""
    row = np.zeros((1, vectors.DIM), dtype=np.float32)
    row[0, : len(weights)] = weights
    return row / np.linalg.norm(row)
