"""The worker's index of served knowledge: every phrasing of every approved, unconflicted entry
as one normalised float32 matrix, searched with one matrix product.

The index is rebuilt when the entries change: a cheap marker (how many entries, and the newest
``updated_at``) is read per reply, so an approval serves from the next customer message with no
restart. Entries not embedded yet (written by hand, edited) are embedded at the rebuild, here in
the worker, and stored.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from django.conf import settings
from django.db.models import Count, Max

from ..models import Message
from ..prompts import Reference
from . import services, vectors
from .models import KnowledgeEntry

# A question this short ("and on Sundays?") is read with the customer's turn before it.
FOLLOW_UP_WORDS = 6

# Rows looked at per result wanted: an entry rarely has more phrasings near one question.
ROWS_PER_RESULT = 16

Marker = tuple[int, str]


@dataclass(frozen=True)
class Index:
    marker: Marker
    matrix: vectors.Matrix = field(default_factory=lambda: np.zeros((0, vectors.DIM), dtype=np.float32))
    owners: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    entries: dict[int, tuple[str, str]] = field(default_factory=dict)  # id: (question, answer)

    def search(self, query: vectors.Matrix, *, k: int, threshold: float) -> list[Reference]:
        """The ``k`` entries nearest ``query`` (a unit row) at or above ``threshold``, best first."""
        return self.ground(query, k=k, threshold=threshold).references

    def ground(self, query: vectors.Matrix, *, k: int, threshold: float) -> Grounding:
        """The references for ``query``, and the runner-up's cosine (below the threshold or not)."""
        # An entry has a row per phrasing: enough rows that k distinct entries are among them.
        best = list(vectors.best_scores(self.matrix, self.owners, query, rows=(k + 1) * ROWS_PER_RESULT).items())
        ranked = [(i, s) for i, s in best if s >= threshold][:k]
        references = [Reference(i, *self.entries[i], round(s, 4)) for i, s in ranked]
        if not best:
            return Grounding(references)
        # Two entries giving the same answer (asked two ways, never merged) do not compete.
        answer = _said(self.entries[best[0][0]][1])
        rivals = [s for i, s in best[1:] if _said(self.entries[i][1]) != answer]
        return Grounding(references, rivals[0] if rivals else 0.0)


@dataclass(frozen=True)
class Grounding:
    """What a question was grounded on: the references, best first, and how near the runner-up
    came, which says whether the best entry stands out enough to lead the reply."""

    references: list[Reference]
    runner_up: float = 0.0

    def lead(self, *, threshold: float, margin: float) -> str:
        """The approved answer the reply starts with, or "": the best entry must reach ``threshold``
        and be ahead of every other entry by ``margin``, since a leading answer is said, not weighed."""
        if not self.references:
            return ""
        best = self.references[0]
        if best.score < threshold or best.score - self.runner_up < margin:
            return ""
        return best.answer


def _said(answer: str) -> str:
    """An answer's words, for telling whether two entries say the same."""
    return " ".join(answer.lower().split()).rstrip(".!")


_lock = threading.Lock()
_current = Index(marker=(0, ""))


def change_marker() -> Marker:
    seen = KnowledgeEntry.objects.aggregate(count=Count("id"), newest=Max("updated_at"))
    return seen["count"], str(seen["newest"] or "")


def current() -> Index:
    """The index for the entries as they are now: the one in memory, or a new one if they changed."""
    global _current
    marker = change_marker()
    with _lock:
        if _current.marker != marker:
            _current = build(marker)
        return _current


def build(marker: Marker) -> Index:
    entries = list(KnowledgeEntry.objects.filter(services.served()))
    blocks = [_embedded(entry) for entry in entries]
    if not entries:
        return Index(marker)
    owners = [np.full(len(b), e.id, dtype=np.int64) for e, b in zip(entries, blocks, strict=True)]
    return Index(
        marker,
        np.concatenate(blocks),
        np.concatenate(owners),
        {e.id: (e.question, e.answer) for e in entries},
    )


def _embedded(entry: KnowledgeEntry) -> vectors.Matrix:
    rows = vectors.from_bytes(entry.embedding)
    if len(rows) != len(entry.phrasings()):
        rows = vectors.embed(entry.phrasings())
        services.embedding_store(entry_id=entry.id, phrasings=entry.phrasings(), rows=rows)
    return rows


def references_for(reply: Message) -> list[Reference]:
    """The served entries that answer the customer's question before ``reply``; none when no
    entry is near enough (small talk), and no embedding at all when nothing is served."""
    return grounding_for(reply).references


def grounding_for(reply: Message) -> Grounding:
    """``references_for`` with the runner-up's cosine, from which the worker decides the lead."""
    index = current()
    if not index.entries:
        return Grounding([])
    question = question_text(reply)
    if not question:
        return Grounding([])
    return ground_text(index, question)


def ground_text(index: Index, question: str) -> Grounding:
    """A question's grounding under the settings: the worker's, and the evaluation's for its probes."""
    return index.ground(vectors.embed([question]), k=settings.KNOWLEDGE_TOP_K, threshold=settings.KNOWLEDGE_THRESHOLD)


def lead_for(grounding: Grounding) -> str:
    """The approved answer a reply starts with under the settings (docs/knowledge.md), or ""."""
    return grounding.lead(threshold=settings.KNOWLEDGE_LEAD_THRESHOLD, margin=settings.KNOWLEDGE_LEAD_MARGIN)


def question_text(reply: Message) -> str:
    """The customer's latest message before the reply, with their turn before it when it is short."""
    asked = list(
        reply.conversation.messages.filter(id__lt=reply.id, role=Message.Role.CUSTOMER)
        .order_by("-id")
        .values_list("text", flat=True)[:2]
    )
    if not asked:
        return ""
    if len(asked[0].split()) < FOLLOW_UP_WORDS and len(asked) > 1:
        return f"{asked[1]}\n{asked[0]}"
    return asked[0]


def search_texts(index: Index, texts: Sequence[str], *, k: int, threshold: float) -> list[list[Reference]]:
    """Each text's references: for the benchmark and the calibration, which search many at once."""
    queries = vectors.embed(texts)
    return [index.search(queries[i : i + 1], k=k, threshold=threshold) for i in range(len(texts))]
