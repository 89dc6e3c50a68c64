"""Question embeddings as float32 bytes, and the nearest of a set of rows.

The encoder is finetuning's all-MiniLM-L6-v2 (``finetuning.similarity``), imported only when a
text is embedded: Celery, the inference worker and ``manage.py knowledge import`` call ``embed``;
the web process only moves the bytes around.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

DIM = 384  # all-MiniLM-L6-v2's sentence vector
Matrix = npt.NDArray[np.float32]


def embed(texts: Sequence[str]) -> Matrix:
    """(n, DIM) unit rows, one per text."""
    from finetuning import similarity

    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    return np.asarray(similarity.embed(texts).numpy(), dtype=np.float32)


def to_bytes(rows: Matrix) -> bytes:
    return np.ascontiguousarray(rows, dtype=np.float32).tobytes()


def from_bytes(data: bytes | memoryview) -> Matrix:
    """The rows stored by ``to_bytes``; (0, DIM) for an entry not embedded yet."""
    return np.frombuffer(bytes(data), dtype=np.float32).reshape(-1, DIM)


def best_scores(matrix: Matrix, owners: npt.NDArray[np.int64], query: Matrix, *, rows: int) -> dict[int, float]:
    """For one unit query row, the best cosine of each owner among the ``rows`` nearest rows, best
    first: one matrix product, then a partial sort, so 100k rows cost what the product costs."""
    if not len(owners):
        return {}
    scores = matrix @ query.reshape(-1)  # (rows,)
    nearest = np.argpartition(-scores, rows - 1)[:rows] if rows < len(scores) else np.arange(len(scores))
    best: dict[int, float] = {}
    for row in nearest[np.argsort(-scores[nearest], kind="stable")]:
        best.setdefault(int(owners[row]), float(scores[row]))
    return best
