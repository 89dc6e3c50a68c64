"""The knowledge writes: an entry by hand, edited, approved, retired, merged, and a suggestion
from what an agent taught. Text is redacted before it enters an entry; every write tells the
agents after its commit (a ``knowledge`` frame, docs/protocol.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from finetuning.redaction import admin_patterns, redact

from .. import events
from ..errors import ChatError
from ..models import Conversation, Correction, Message
from . import matching, personal, vectors
from .models import KnowledgeEntry, KnowledgeSource

MAX_CHARS = 4000


@dataclass(frozen=True)
class Taught:
    """What an agent taught, and where: a question (the customer's), its answer, the source rows."""

    question: str
    answer: str
    conversation: Conversation | None = None
    message: Message | None = None
    correction: Correction | None = None
    author: User | None = None


def clean(text: object, field: str) -> str:
    """``text`` redacted and trimmed; refused when empty or too long."""
    return redact(_checked(text, field), admin_patterns()).strip()


def clean_answer(text: object, said: Sequence[str] = ()) -> str:
    """An answer trimmed, without the personal data of the customer who said ``said`` (and never
    a card, IBAN or id), keeping the desk's own facts: ``personal.answer_redacted``."""
    return personal.answer_redacted(_checked(text, "answer"), said, admin_patterns()).strip()


def _checked(text: object, field: str) -> str:
    if not isinstance(text, str) or not text.strip():
        article = "an" if field[0] in "aeiou" else "a"
        raise ChatError("empty_text", f"An entry needs {article} {field}.")
    if len(text) > MAX_CHARS:
        raise ChatError("text_too_long", f"This {field} is too long.")
    return text.strip()


def _clean_all(texts: Iterable[object]) -> list[str]:
    return list(dict.fromkeys(clean(t, "phrasing") for t in texts))


def entry_payload(entry: KnowledgeEntry) -> dict[str, object]:
    return {
        "id": entry.id,
        "question": entry.question,
        "alternatives": entry.alternatives,
        "answer": entry.answer,
        "status": entry.status,
        "conflict": entry.conflict,
        "sources": entry.sources.count(),
        "approved_at": entry.approved_at.isoformat() if entry.approved_at else None,
    }


def _changed(*entries: KnowledgeEntry) -> None:
    frames = [events.to_agents({"type": "knowledge", "entry": entry_payload(e)}) for e in entries]
    events.send_on_commit(*frames)


@transaction.atomic
def entry_create(
    *, question: object, answer: object, alternatives: Sequence[object] = (), author: User | None = None
) -> KnowledgeEntry:
    """An entry written by hand: a suggestion until someone approves it; embedded by the worker."""
    entry = KnowledgeEntry.objects.create(
        question=clean(question, "question"),
        answer=clean_answer(answer),
        alternatives=_clean_all(alternatives),
    )
    KnowledgeSource.objects.create(entry=entry, author=author)
    _changed(entry)
    return entry


@transaction.atomic
def entry_edit(
    *,
    entry: KnowledgeEntry,
    question: object = None,
    answer: object = None,
    alternatives: Sequence[object] | None = None,
    resolved: bool = False,
) -> KnowledgeEntry:
    """Change what is given; a changed question or phrasing drops the embedding (the worker embeds
    it again). ``resolved`` clears the conflict flag: a person has settled which answer holds."""
    entry = KnowledgeEntry.objects.select_for_update().get(id=entry.id)
    if question is not None or alternatives is not None:
        entry.question = clean(question, "question") if question is not None else entry.question
        entry.alternatives = _clean_all(alternatives) if alternatives is not None else entry.alternatives
        entry.embedding = b""
    if answer is not None:
        entry.answer = clean_answer(answer)
    if resolved:
        entry.conflict = False
    entry.save()
    _changed(entry)
    return entry


@transaction.atomic
def entries_approve(*, ids: Iterable[int], by: User | None) -> list[KnowledgeEntry]:
    """Approve the suggestions given: served from the next customer message (a conflicted one
    only once its conflict is resolved)."""
    entries = list(KnowledgeEntry.objects.select_for_update().filter(id__in=list(ids)).exclude(status="approved"))
    for entry in entries:
        entry.status = KnowledgeEntry.Status.APPROVED
        entry.approved_by, entry.approved_at = by, timezone.now()
        entry.save()
    _changed(*entries)
    return entries


@transaction.atomic
def entry_retire(*, entry: KnowledgeEntry) -> KnowledgeEntry:
    """No longer served nor matched by new suggestions; kept, with its sources, for the record."""
    entry = KnowledgeEntry.objects.select_for_update().get(id=entry.id)
    entry.status, entry.conflict = KnowledgeEntry.Status.RETIRED, False
    entry.save()
    _changed(entry)
    return entry


@transaction.atomic
def entries_merge(*, into: KnowledgeEntry, others: Sequence[KnowledgeEntry]) -> KnowledgeEntry:
    """One entry from several: ``into`` keeps its answer and takes the others' phrasings and
    sources; the others are retired. A merge settles a conflict between them."""
    locked = list(KnowledgeEntry.objects.select_for_update().filter(id__in=[into.id, *(o.id for o in others)]))
    target = next(e for e in locked if e.id == into.id)
    merged = [e for e in locked if e.id != into.id]
    phrasings = [p for e in merged for p in e.phrasings()]
    target.alternatives = [p for p in dict.fromkeys([*target.alternatives, *phrasings]) if p != target.question]
    target.embedding = b"".join([bytes(target.embedding), *(bytes(e.embedding) for e in merged)])
    if len(vectors.from_bytes(target.embedding)) != len(target.phrasings()):
        target.embedding = b""  # some were never embedded, or duplicates fell out: embedded again
    target.conflict = False
    target.save()
    KnowledgeSource.objects.filter(entry__in=merged).update(entry=target)
    for entry in merged:
        entry.status, entry.conflict = KnowledgeEntry.Status.RETIRED, False
        entry.save()
    _changed(target, *merged)
    return target


def embedding_store(*, entry_id: int, phrasings: Sequence[str], rows: vectors.Matrix) -> bool:
    """Store the embedding of ``phrasings``, unless the entry's phrasings changed meanwhile."""
    with transaction.atomic():
        entry = KnowledgeEntry.objects.select_for_update().filter(id=entry_id).first()
        if entry is None or entry.phrasings() != list(phrasings):
            return False
        KnowledgeEntry.objects.filter(id=entry_id).update(embedding=vectors.to_bytes(rows))
    return True


@transaction.atomic
def suggestion_record(*, taught: Taught, vector: vectors.Matrix) -> KnowledgeEntry:
    """A new suggestion, or a source more for the nearest live entry that asks the same question
    (cosine above KNOWLEDGE_GROUP_THRESHOLD). Its answer stating other figures (a price, a day)
    marks both a conflict instead, and neither is served until a person resolves it.

    ``vector`` is the (1, DIM) embedding of the question as stored (``clean(taught.question)``):
    the caller embeds, off the web process.
    """
    question, answer = clean(taught.question, "question"), clean_answer(taught.answer, _customer_said(taught))
    earlier = _taught_before(taught)
    if earlier is not None:  # the agent changed this correction: its entry follows, while a suggestion
        return _reanswer(earlier, answer)
    nearest, score = _nearest(vector)
    same_question = nearest is not None and score >= settings.KNOWLEDGE_GROUP_THRESHOLD
    if nearest is not None and same_question and not matching.answers_disagree(nearest.answer, answer):
        return _reinforce(nearest, question, vector, taught)
    entry = KnowledgeEntry.objects.create(
        question=question, answer=answer, embedding=vectors.to_bytes(vector), conflict=same_question
    )
    _source_add(entry, taught)
    if nearest is not None and same_question:
        nearest.conflict = True
        nearest.save()
        _changed(entry, nearest)
    else:
        _changed(entry)
    return entry


def _customer_said(taught: Taught) -> list[str]:
    """Everything the customer wrote in the conversation the answer was taught in."""
    if taught.conversation is None:
        return [taught.question]
    said = taught.conversation.messages.filter(role=Message.Role.CUSTOMER).values_list("text", flat=True)
    return [taught.question, *said]


def _taught_before(taught: Taught) -> KnowledgeEntry | None:
    if taught.message is None:
        return None
    return KnowledgeEntry.objects.select_for_update().filter(sources__message=taught.message).first()


def _reanswer(entry: KnowledgeEntry, answer: str) -> KnowledgeEntry:
    if entry.status == KnowledgeEntry.Status.SUGGESTED and entry.answer != answer:
        entry.answer = answer
        entry.save()
        _changed(entry)
    return entry


def _nearest(vector: vectors.Matrix) -> tuple[KnowledgeEntry | None, float]:
    """The live (not retired) entry whose best phrasing is nearest ``vector``, locked."""
    live = list(
        KnowledgeEntry.objects.select_for_update()
        .exclude(status=KnowledgeEntry.Status.RETIRED)
        .exclude(embedding=b"")
        .only("id", "embedding")
    )
    if not live:
        return None, -1.0
    blocks = [vectors.from_bytes(e.embedding) for e in live]
    owners = np.concatenate([np.full(len(b), e.id, dtype=np.int64) for e, b in zip(live, blocks, strict=True)])
    best = vectors.best_scores(np.concatenate(blocks), owners, vector, rows=1)
    entry_id, score = max(best.items(), key=lambda item: item[1])
    return KnowledgeEntry.objects.get(id=entry_id), score


def _reinforce(entry: KnowledgeEntry, question: str, vector: vectors.Matrix, taught: Taught) -> KnowledgeEntry:
    """One source more; a new wording of the question becomes an alternative phrasing."""
    if question not in entry.phrasings() and len(vectors.from_bytes(entry.embedding)) == len(entry.phrasings()):
        entry.alternatives = [*entry.alternatives, question]
        entry.embedding = bytes(entry.embedding) + vectors.to_bytes(vector)
        entry.save()
    _source_add(entry, taught)
    _changed(entry)
    return entry


def _source_add(entry: KnowledgeEntry, taught: Taught) -> None:
    author = taught.author or (taught.correction.author if taught.correction else None)
    KnowledgeSource.objects.create(
        entry=entry,
        conversation=taught.conversation,
        message=taught.message,
        correction=taught.correction,
        author=author,
    )


def served() -> Q:
    """The entries the bot answers from: approved and not in conflict."""
    return Q(status=KnowledgeEntry.Status.APPROVED, conflict=False)
