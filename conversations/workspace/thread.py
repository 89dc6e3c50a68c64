"""The transcript's thread and side panel: private notes between agents, the activity lines the
thread shows beside the messages, the team's canned replies and the snippets offered while typing,
and what the panel says about the customer.

Writes (``note_add``, ``canned_reply_*``) send their frames after the commit; reads build what the
transcript page and the snippet endpoint show. A note is agent-only by construction: it is its own
table (never a ``Message``, which prompts, datasets and exports read) and its frame goes to the
agents' group alone, which ``events.for_customer`` would drop in any case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Avg, Count, OuterRef, Q, QuerySet, Subquery

from .. import events, roles
from ..errors import ChatError
from ..knowledge.models import KnowledgeEntry
from ..knowledge.selectors import TABS as KNOWLEDGE_TABS
from ..models import Conversation, Message
from ..selectors import activity_payload
from ..widget.selectors import conversation_origin
from .models import CannedReply, ConversationEvent, ConversationNote

NOTE_FRAME = "note"
SNIPPET_LIMIT = 8
OTHER_CONVERSATIONS_SHOWN = 10
SNIPPET_CHARS = 120


def note_max_chars() -> int:
    return int(settings.CHAT_MAX_MESSAGE_CHARS) * 4


# Notes.


def note_add(*, conversation: Conversation, author: User, text: object) -> ConversationNote:
    """An agent's private note in the conversation's thread; every agent's screen hears it."""
    if not isinstance(text, str) or not text.strip():
        raise ChatError("empty_note", "Write the note first.")
    text = text.strip()
    limit = note_max_chars()
    if len(text) > limit:
        raise ChatError("note_too_long", f"A note is at most {limit} characters; this one has {len(text)}.")
    note = ConversationNote.objects.create(conversation=conversation, author=author, text=text)
    events.send_on_commit(note_sent(note))
    return note


def note_payload(note: ConversationNote) -> dict[str, Any]:
    return {
        "id": note.id,
        "author": roles.display_name(note.author) if note.author_id else "",
        "text": note.text,
        "created_at": note.created_at.isoformat(),
    }


def note_event(note: ConversationNote) -> dict[str, Any]:
    return {"type": NOTE_FRAME, "conversation_id": str(note.conversation_id), "note": note_payload(note)}


def note_sent(note: ConversationNote) -> events.Event:
    """To the agents' group only: the conversation's group is the customer's too."""
    return events.to_agents(note_event(note))


# Activity lines: the events the SYSTEM message lines do not already tell ("Dana joined the
# conversation." is the takeover's line, and the hand-back and the close have their own).

THREAD_ACTIVITY = frozenset(
    {
        ConversationEvent.Kind.HANDOFF_REQUESTED,
        ConversationEvent.Kind.ASSIGNED,
        ConversationEvent.Kind.UNASSIGNED,
    }
)


def activity_text(*, kind: str, actor: str, assignee: str) -> str:
    """The line the thread shows for an event; static/agent-thread.js words live ones the same."""
    if kind == ConversationEvent.Kind.HANDOFF_REQUESTED:
        return "Customer asked for a person"
    if kind == ConversationEvent.Kind.ASSIGNED:
        if actor and actor == assignee:
            return f"{actor} took this"
        if actor:
            return f"{actor} assigned this to {assignee or 'nobody'}"
        return f"Assigned to {assignee}" if assignee else "Assigned"
    if kind == ConversationEvent.Kind.UNASSIGNED:
        if actor and assignee and actor != assignee:
            return f"{actor} unassigned {assignee}"
        return f"{actor} unassigned this" if actor else "Unassigned"
    return ConversationEvent.Kind(kind).label.capitalize()


@dataclass(frozen=True)
class ThreadItem:
    """One line of the thread: a message row (the transcript's dict), a note, or an activity line."""

    kind: str  # "message", "note", "activity"
    created_at: datetime
    order: int
    message: dict[str, Any] | None = None
    note: ConversationNote | None = None
    event: ConversationEvent | None = None
    text: str = ""


def thread_extras(conversation: Conversation) -> tuple[list[ConversationNote], list[ConversationEvent]]:
    """The conversation's notes and its activity events for the thread, oldest first, in two queries."""
    notes = list(conversation.notes.select_related("author").order_by("created_at", "id"))
    activity = list(
        conversation.events.filter(kind__in=THREAD_ACTIVITY)
        .select_related("actor", "assignee")
        .order_by("created_at", "id")
    )
    return notes, activity


def thread(
    rows: list[dict[str, Any]], notes: list[ConversationNote], activity: list[ConversationEvent]
) -> list[ThreadItem]:
    """Messages (``rows``, each with its ``message``), notes and activity lines in time order; at
    the same instant an event comes before the messages it caused, and a note after them."""
    items = chain(
        (ThreadItem("activity", e.created_at, 0, event=e, text=_event_text(e)) for e in activity),
        (ThreadItem("message", r["message"].created_at, 1, message=r) for r in rows),
        (ThreadItem("note", n.created_at, 2, note=n) for n in notes),
    )
    return sorted(items, key=lambda item: (item.created_at, item.order))


def thread_payload(conversation: Conversation) -> dict[str, list[dict[str, Any]]]:
    """The notes and the shown activity events, as their frames carry them, oldest first."""
    notes, activity = thread_extras(conversation)
    return {"notes": [note_payload(n) for n in notes], "activity": [activity_payload(e) for e in activity]}


def _event_text(event: ConversationEvent) -> str:
    return activity_text(
        kind=event.kind,
        actor=roles.display_name(event.actor) if event.actor_id else "",
        assignee=roles.display_name(event.assignee) if event.assignee_id else "",
    )


# Canned replies: written through ``CannedReplyForm`` (thread_views), which validates the shortcut.


def canned_replies() -> QuerySet[CannedReply]:
    return CannedReply.objects.select_related("created_by").order_by("shortcut")


def canned_reply_delete(*, reply: CannedReply) -> None:
    reply.delete()


# Snippets: what the composer offers after a "/".


def snippets(query: str, *, limit: int = SNIPPET_LIMIT) -> list[dict[str, str]]:
    """Canned replies whose shortcut starts with ``query`` (then those that contain it), then
    approved knowledge entries (not in conflict) whose question holds every word of ``query``;
    at most ``limit`` in all. An empty query lists canned replies only."""
    query = query.strip().lower().lstrip("/")[:100]
    found = [_canned_snippet(r) for r in _canned_matching(query, limit)]
    words = [w for w in query.replace("-", " ").replace("_", " ").split() if w]
    if words and len(found) < limit:
        found += [_knowledge_snippet(e) for e in _knowledge_matching(words, limit - len(found))]
    return found


def _canned_matching(query: str, limit: int) -> list[CannedReply]:
    starting = list(CannedReply.objects.filter(shortcut__startswith=query).order_by("shortcut")[:limit])
    if len(starting) >= limit or not query:
        return starting
    containing = (
        CannedReply.objects.filter(shortcut__contains=query)
        .exclude(id__in=[r.id for r in starting])
        .order_by("shortcut")[: limit - len(starting)]
    )
    return starting + list(containing)


def _knowledge_matching(words: list[str], limit: int) -> QuerySet[KnowledgeEntry]:
    served = KNOWLEDGE_TABS["approved"]  # approved and not in conflict: what the bot serves too
    for word in words:
        served &= Q(question__icontains=word) | Q(alternatives__icontains=word)
    return KnowledgeEntry.objects.filter(served).defer("embedding").order_by("question", "id")[:limit]


def _canned_snippet(reply: CannedReply) -> dict[str, str]:
    return {"kind": "canned", "shortcut": reply.shortcut, "label": f"/{reply.shortcut}", "text": reply.text}


def _knowledge_snippet(entry: KnowledgeEntry) -> dict[str, str]:
    return {"kind": "knowledge", "shortcut": "", "label": entry.question, "text": entry.answer}


# The customer beside the transcript.


@dataclass(frozen=True)
class OtherConversation:
    conversation: Conversation
    last_text: str
    last_at: datetime


@dataclass
class CustomerContext:
    name: str
    email: str
    origin: dict[str, str]
    satisfaction: int | None
    satisfaction_average: float | None
    satisfaction_count: int
    others: list[OtherConversation] = field(default_factory=list)
    others_more: int = 0


def customer_context(conversation: Conversation) -> CustomerContext:
    """Who the customer is (as far as known), where they chat from, and their other conversations
    (newest first, at most ``OTHER_CONVERSATIONS_SHOWN``, and how many more), with the satisfaction
    they gave here and on average over all their conversations."""
    customer = conversation.customer
    theirs = Conversation.objects.filter(customer=customer)
    scores = theirs.filter(satisfaction__isnull=False).aggregate(average=Avg("satisfaction"), count=Count("id"))
    others = theirs.exclude(id=conversation.id)
    last = Message.objects.filter(conversation=OuterRef("pk")).exclude(role=Message.Role.SYSTEM).exclude(text="")
    shown = list(
        others.annotate(
            last_text=Subquery(last.order_by("-created_at", "-id").values("text")[:1]),
        ).order_by("-created_at", "-id")[:OTHER_CONVERSATIONS_SHOWN]
    )
    count = others.count() if len(shown) == OTHER_CONVERSATIONS_SHOWN else len(shown)
    average = scores["average"]
    return CustomerContext(
        name=customer.display_name,
        email=customer.email,
        origin=conversation_origin(conversation),
        satisfaction=conversation.satisfaction,
        satisfaction_average=round(float(average), 1) if average is not None else None,
        satisfaction_count=int(scores["count"]),
        others=[
            OtherConversation(
                conversation=c,
                last_text=_snippet(getattr(c, "last_text", None) or ""),
                last_at=c.last_activity_at or c.created_at,
            )
            for c in shown
        ],
        others_more=max(count - len(shown), 0),
    )


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…"
