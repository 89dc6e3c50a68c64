"""Customer questions in new words, written by the base model itself, for the evaluation's probes.

A probe must ask a taught fact in words the adapter never trained on, or it measures memory of the
training text rather than knowledge of the fact. Each instruction below is one way of rewording,
decoded greedily (the same probes for the same snapshot and model); a rewording is kept only when
it differs from every trained phrasing and stays close in meaning (MiniLM cosine), since a small
model sometimes answers the question instead of rewording it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from conversations.prompts import Turn

from .base import generate_greedy
from .datasets import Renderer
from .similarity import embed, words

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

INSTRUCTIONS = (
    "Rewrite the customer's question in different words. Reply with the rewritten question only.",
    "Ask the same thing the way another customer would, more briefly. Reply with the question only.",
    "Rephrase this question politely, keeping its meaning. Reply with the question only.",
)

# What small models wrap a rewording in: a label before it, quotes around it.
LABEL = re.compile(r"^\s*(?:rewritten question|rephrased question|question|rewording)\s*:\s*", re.IGNORECASE)


def normalised(text: str) -> str:
    """The words alone: "Gift wrap?" and "gift wrap" are the same phrasing."""
    return " ".join(words(text))


def cleaned(generated: str) -> str:
    """The first line of a generated rewording, without a label or quotes."""
    line = next((part for part in generated.splitlines() if part.strip()), "")
    return LABEL.sub("", line).strip().strip("\"'“”").strip()


def reworded(
    model: Any, tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], *, per_question: int, max_new_tokens: int
) -> list[list[str]]:
    """Up to ``per_question`` rewordings of each question, one per instruction, repeats included."""
    found: list[list[str]] = [[] for _ in questions]
    for instruction in INSTRUCTIONS[:per_question]:
        renderer = Renderer(tokenizer, system_prompt=instruction, max_seq_len=10_000)
        prompts = [renderer.prompt_for([Turn("customer", q)]) for q in questions]
        for i, reply in enumerate(generate_greedy(model, tokenizer, prompts, max_new_tokens=max_new_tokens)):
            found[i].append(cleaned(reply))
    return found


def kept(
    question: str, rewordings: Sequence[str], *, trained: Collection[str], similarity: Sequence[float], minimum: float
) -> list[str]:
    """The rewordings that are new (no trained phrasing, no repeat) and close in meaning to ``question``.
    ``trained`` holds normalised phrasings; ``similarity`` is each rewording's cosine with the question."""
    seen = set(trained) | {normalised(question)}
    chosen = []
    for text, score in zip(rewordings, similarity, strict=True):
        key = normalised(text)
        if key and key not in seen and score >= minimum:
            seen.add(key)
            chosen.append(text)
    return chosen


def paraphrases(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    *,
    trained: Collection[str],
    per_question: int,
    minimum: float,
    max_new_tokens: int = 32,
) -> list[list[str]]:
    """For each question, its kept rewordings (possibly none): see ``kept``."""
    if not questions or per_question <= 0:
        return [[] for _ in questions]
    drafts = reworded(model, tokenizer, questions, per_question=per_question, max_new_tokens=max_new_tokens)
    # One batch: every question, then its rewordings in order (all questions have as many).
    vectors = embed([*questions, *(text for rewordings in drafts for text in rewordings)])  # (n + n*k, 384)
    width = len(drafts[0])
    result = []
    for i, (question, rewordings) in enumerate(zip(questions, drafts, strict=True)):
        start = len(questions) + i * width
        scores = [float(score) for score in vectors[start : start + width] @ vectors[i]]
        result.append(kept(question, rewordings, trained=trained, similarity=scores, minimum=minimum))
    return result
