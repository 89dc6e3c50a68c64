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
from .rendering import Renderer
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


# Training phrasings come from a few-shot completion rather than the probes' instructions: the
# 135M model, told to reword in a system prompt, mostly answers instead (measured on the shop's
# 40 questions: nearly every greedy draft was an answer), while it continues a list of reworded
# questions faithfully. Other words than the probes' also keep the probes held out.
FEW_SHOT = (
    ("What time do you close today?", "Until when are you open today?"),
    ("Can I get a refund for a broken mug?", "My mug arrived broken, can I have my money back?"),
    ("Do you sell shoes?", "Is it possible to buy shoes from your store?"),
    ("How do I reset my password?", "I forgot my password, how can I change it?"),
)


def few_shot_prompt(question: str) -> str:
    """A raw completion prompt whose natural next line is ``question`` in other words."""
    shots = "".join(f"Question: {asked}\nIn other words: {again}\n\n" for asked, again in FEW_SHOT)
    return f"Customer questions, each asked again in other words.\n\n{shots}Question: {question}\nIn other words:"


def training_drafts(
    model: Any, tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], *, per_question: int, seed: int = 0
) -> list[list[str]]:
    """``per_question`` sampled rewordings of each question, unfiltered (see ``retrieval_kept``)."""
    from .base import sample_lines

    if not questions or per_question <= 0:
        return [[] for _ in questions]
    prompts = [few_shot_prompt(normalised_space(q)) for q in questions]
    drafts = sample_lines(model, tokenizer, prompts, per_prompt=per_question, max_new_tokens=24, seed=seed)
    return [[cleaned(text) for text in texts] for texts in drafts]


def normalised_space(text: str) -> str:
    """One line: a question typed over several lines would end the few-shot pattern early."""
    return " ".join(text.split())


def retrieval_kept(
    questions: Sequence[str], answers: Sequence[str], drafts: Sequence[Sequence[str]], *, minimum: float
) -> list[list[str]]:
    """The drafts that still ask their own question: new words, a MiniLM cosine of at least
    ``minimum`` with it, and, searched against every question of the build, a nearest question
    with the same answer (its own, or another asking of the same fact). A rewording that lands
    nearer another fact would teach that fact's question the wrong answer."""
    if not questions:
        return []
    flat = [text for texts in drafts for text in texts]
    vectors = embed([*questions, *flat]) if flat else embed(questions)  # (n + drafts, 384)
    asked, reworded = vectors[: len(questions)], vectors[len(questions) :]
    trained = {normalised(q) for q in questions}
    same = [normalised(a) for a in answers]
    result, offset = [], 0
    for i, texts in enumerate(drafts):
        scores = reworded[offset : offset + len(texts)] @ asked.T  # (drafts of i, n)
        offset += len(texts)
        maps_back = [same[int(row.argmax())] == same[i] for row in scores]
        candidates = [t for t, ok in zip(texts, maps_back, strict=True) if ok]
        similarity = [float(row[i]) for row, ok in zip(scores, maps_back, strict=True) if ok]
        result.append(kept(questions[i], candidates, trained=trained, similarity=similarity, minimum=minimum))
    return result
