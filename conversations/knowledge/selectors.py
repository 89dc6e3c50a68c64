"""Reads for the knowledge page: the entries of a tab, the count of each tab, and how each entry
did in live use; and what a customer may read of an entry (its question, as a reply's source line)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db.models import Count, Max, Prefetch, Q, QuerySet

from ..models import Conversation, Feedback, Message
from .models import KnowledgeEntry, KnowledgeSource

# The page's tabs: a conflicted entry is in Conflicts whatever its status (retiring clears it),
# so a person sees it where it needs them, and nowhere else.
TABS: dict[str, Q] = {
    "suggested": Q(status=KnowledgeEntry.Status.SUGGESTED, conflict=False),
    "approved": Q(status=KnowledgeEntry.Status.APPROVED, conflict=False),
    "conflicts": Q(conflict=True) & ~Q(status=KnowledgeEntry.Status.RETIRED),
    "retired": Q(status=KnowledgeEntry.Status.RETIRED),
}
TAB_LABELS = {"suggested": "Suggested", "approved": "Approved", "conflicts": "Conflicts", "retired": "Retired"}


def tab_or_default(tab: object) -> str:
    return tab if isinstance(tab, str) and tab in TABS else "suggested"


def search_q(text: str) -> Q:
    """Entries whose question, other phrasings or answer contain ``text``, ignoring case. The
    phrasings are matched in their JSON text: a quote or a non-ASCII letter may be stored escaped."""
    text = text.strip()
    if not text:
        return Q()
    return Q(question__icontains=text) | Q(answer__icontains=text) | Q(alternatives__icontains=text)


def tab_counts(search: str = "") -> dict[str, int]:
    """Each tab's count, in one aggregate query, under the same search as the list."""
    counts = KnowledgeEntry.objects.filter(search_q(search)).aggregate(
        **{tab: Count("id", filter=where) for tab, where in TABS.items()}
    )
    return {tab: int(counts[tab] or 0) for tab in TABS}


def entries(tab: str, search: str = "", *, only: int | None = None) -> QuerySet[KnowledgeEntry]:
    """The tab's entries (``only`` the one with that id), newest change first, with their sources
    (and approver) loaded in the same few queries whatever the number of entries."""
    sources = KnowledgeSource.objects.order_by("created_at", "id").only("id", "entry_id", "conversation_id")
    return (
        KnowledgeEntry.objects.filter(TABS[tab_or_default(tab)])
        .filter(search_q(search) if only is None else Q(id=only))
        .select_related("approved_by")
        .annotate(source_count=Count("sources", distinct=True))
        .prefetch_related(Prefetch("sources", queryset=sources))
        .defer("embedding")
    )


def all_entries() -> QuerySet[KnowledgeEntry]:
    """Every entry, for an export: oldest first, sources counted in the same query."""
    return KnowledgeEntry.objects.order_by("id").annotate(source_count=Count("sources")).defer("embedding")


@dataclass
class Usage:
    """How one entry did in live use: the bot replies grounded on it, the thumbs on them (the
    customers' and the agents'), and the replies after which the conversation went to a person."""

    replies: int = 0
    up: int = 0
    down: int = 0
    agent_good: int = 0
    agent_bad: int = 0
    handoffs: int = 0


@dataclass(frozen=True)
class _Grounded:
    message_id: int
    conversation_id: UUID
    entries: frozenset[int]


def entries_usage(entry_ids: Iterable[int]) -> dict[int, Usage]:
    """Usage for each entry given, in three queries whatever the number of entries or replies.

    The grounded replies are picked in Python from the bot replies with a grounding: SQLite cannot
    ask "which JSON lists hold an object with this entry" in SQL (PostgreSQL's jsonb ``@>`` could),
    so this reads every grounded reply's id and grounding, fine for a desk's volume for now.
    """
    wanted = set(entry_ids)
    usage = {entry_id: Usage() for entry_id in wanted}
    grounded = [g for g in _grounded_replies() if g.entries & wanted]
    if not grounded:
        return usage
    for g in grounded:
        for entry_id in g.entries & wanted:
            usage[entry_id].replies += 1
    _count_feedback(usage, grounded)
    _count_handoffs(usage, grounded)
    return usage


def _grounded_replies() -> list[_Grounded]:
    rows = (
        Message.objects.filter(role=Message.Role.BOT)
        .exclude(grounding=[])
        .values_list("id", "conversation_id", "grounding")
        .iterator(chunk_size=2000)
    )
    return [
        _Grounded(message_id, conversation_id, grounding_entry_ids(grounding))
        for message_id, conversation_id, grounding in rows
    ]


def grounding_entry_ids(grounding: Any) -> frozenset[int]:
    """The entry ids a reply's stored grounding names (``[{"entry": id, "score": ...}]``); none for junk."""
    if not isinstance(grounding, list):
        return frozenset()
    return frozenset(g["entry"] for g in grounding if isinstance(g, dict) and isinstance(g.get("entry"), int))


def _count_feedback(usage: dict[int, Usage], grounded: list[_Grounded]) -> None:
    by_message = {g.message_id: g.entries for g in grounded}
    ratings = Feedback.objects.filter(message_id__in=by_message).values_list("message_id", "source", "positive")
    for message_id, source, positive in ratings:
        for entry_id in by_message[message_id] & usage.keys():
            counts = usage[entry_id]
            if source == Feedback.Source.CUSTOMER:
                counts.up, counts.down = counts.up + positive, counts.down + (not positive)
            else:
                counts.agent_good, counts.agent_bad = counts.agent_good + positive, counts.agent_bad + (not positive)


def _count_handoffs(usage: dict[int, Usage], grounded: list[_Grounded]) -> None:
    """A handoff after a reply: it is its conversation's last bot reply, and the conversation then
    went to a person (it waits for an agent or an agent holds it now, or an agent wrote after it).
    A handoff is stored as the conversation's status and the agents' messages, not as an event, so
    a conversation handed back to the bot and answered again no longer counts the earlier one."""
    people = (Conversation.Status.WAITING, Conversation.Status.AGENT)
    after = (
        Conversation.objects.filter(id__in={g.conversation_id for g in grounded})
        .annotate(
            last_bot=Max("messages__id", filter=Q(messages__role=Message.Role.BOT)),
            last_agent=Max("messages__id", filter=Q(messages__role=Message.Role.AGENT)),
        )
        .values_list("id", "status", "last_bot", "last_agent")
    )
    state = {cid: (status, last_bot, last_agent) for cid, status, last_bot, last_agent in after}
    for g in grounded:
        status, last_bot, last_agent = state[g.conversation_id]
        if g.message_id == last_bot and (status in people or (last_agent or 0) > g.message_id):
            for entry_id in g.entries & usage.keys():
                usage[entry_id].handoffs += 1


def source_lines(groundings: Iterable[Any]) -> list[list[str]]:
    """For each reply's grounding, the questions of its entries that a customer may read under it
    (the admin's ``KNOWLEDGE_SHOW_SOURCES``): nothing when it is off, one query for all replies
    when it is on. Only the question: an entry's id, score and status stay the agents'."""
    groundings = list(groundings)
    if not settings.KNOWLEDGE_SHOW_SOURCES:
        return [[] for _ in groundings]
    ids = [[g["entry"] for g in grounding if isinstance(g, dict) and "entry" in g] for grounding in groundings]
    wanted = {i for row in ids for i in row}
    questions = dict(KnowledgeEntry.objects.filter(id__in=wanted).values_list("id", "question")) if wanted else {}
    return [[questions[i] for i in row if i in questions] for row in ids]


def grounding_rows(groundings: Iterable[Any]) -> list[list[dict[str, Any]]]:
    """For the agents' transcript: each reply's entries (id, question, cosine), in one query for
    all replies. An entry deleted since is left out."""
    groundings = [g if isinstance(g, list) else [] for g in groundings]
    wanted = {g["entry"] for row in groundings for g in row if isinstance(g, dict) and "entry" in g}
    found = KnowledgeEntry.objects.filter(id__in=wanted).only("id", "question", "status", "conflict") if wanted else []
    entries = {e.id: e for e in found}
    return [
        [
            {
                "id": g["entry"],
                "question": entries[g["entry"]].question,
                "score": g.get("score"),
                "tab": tab_of(entries[g["entry"]]),
            }
            for g in row
            if isinstance(g, dict) and g.get("entry") in entries
        ]
        for row in groundings
    ]


def tab_of(entry: KnowledgeEntry) -> str:
    """The page's tab an entry is listed in now."""
    if entry.conflict and entry.status != KnowledgeEntry.Status.RETIRED:
        return "conflicts"
    return str(entry.status)
