"""Reads, and the one place that decides what a message looks like on the wire."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Count, Max, OuterRef, Q, Subquery
from django.utils import timezone

from . import health, roles
from .knowledge import selectors as knowledge_selectors
from .models import Conversation, ConversationEvent, Customer, Feedback, Message
from .widget import selectors as widget_selectors


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def message_payload(message: Message, *, sources: list[str] | None = None) -> dict[str, Any]:
    """A message as customers' and agents' sockets receive it; ``sources`` when the caller already
    read them for many messages at once (``conversation_history``)."""
    if sources is None:
        sources = knowledge_selectors.source_lines([message.grounding])[0]
    version = message.model_version if message.model_version_id else None  # no query for a message without one
    payload: dict[str, Any] = {
        "id": message.id,
        "role": message.role,
        "text": message.text,
        "status": message.status,
        "client_id": message.client_id,
        "created_at": _iso(message.created_at),
        "first_token_at": _iso(message.first_token_at),
        "finished_at": _iso(message.finished_at),
        "token_count": message.token_count,
        "model": message.model_name,
        "error": message.error,
        "author": roles.display_name(message.author) if message.role == Message.Role.AGENT else "",
        "model_version": version.name if version is not None else None,  # agents only
        "grounding": message.grounding,  # agents only: the knowledge entries the reply rests on
    }
    if sources:  # for the customer too: the entries' questions, only with KNOWLEDGE_SHOW_SOURCES
        payload["sources"] = sources
    return payload


def message_payload_by_id(message_id: int) -> dict[str, Any]:
    return message_payload(Message.objects.select_related("author", "model_version").get(id=message_id))


def conversation_payload(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.id),
        "status": conversation.status,
        "created_at": _iso(conversation.created_at),
        "agent": roles.display_name(conversation.agent) if conversation.status == Conversation.Status.AGENT else "",
        "satisfaction": conversation.satisfaction,
        "origin": widget_selectors.conversation_origin(conversation),  # agents only: page URL, browser
    }


def customer_feedback(conversation: Conversation) -> dict[str, dict[str, Any]]:
    """The customer's own ratings, by message id: restores their thumbs after a reload."""
    rows = Feedback.objects.filter(message__conversation=conversation, source=Feedback.Source.CUSTOMER)
    return {str(f.message_id): feedback_payload(f) for f in rows}


def feedback_payload(feedback: Feedback) -> dict[str, Any]:
    return {"positive": feedback.positive, "reason": feedback.reason, "comment": feedback.comment}


def conversation_history(conversation: Conversation) -> list[dict[str, Any]]:
    # With the system lines ("Dana joined the conversation."): the customer and the agents both read them.
    messages = list(conversation.messages.select_related("author", "model_version"))
    lines = knowledge_selectors.source_lines(m.grounding for m in messages)
    return [message_payload(m, sources=line) for m, line in zip(messages, lines, strict=True)]


def conversation_latest_open(customer: Customer) -> Conversation | None:
    return customer.conversations.exclude(status=Conversation.Status.CLOSED).order_by("-created_at").first()


def conversation_of_customer(customer: Customer, conversation_id: str) -> Conversation | None:
    try:
        return customer.conversations.filter(id=conversation_id).first()
    except ValidationError:  # not a UUID
        return None


def reply_in_flight(conversation: Conversation) -> Message | None:
    return (
        conversation.messages.filter(role=Message.Role.BOT, status__in=Message.ACTIVE_STATUSES)
        .order_by("-created_at")
        .first()
    )


def replies_unqueued(*, queued: set[int], older_than_s: float, limit: int = 100) -> list[tuple[int, str]]:
    """(id, worker that claimed it) of bot replies still waiting for a worker that have no request
    in the stream (``queued``); a reply nobody claimed yet has an empty owner."""
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    return list(
        Message.objects.filter(role=Message.Role.BOT, status__in=Message.ACTIVE_STATUSES, created_at__lt=cutoff)
        .exclude(id__in=queued)
        .order_by("id")
        .values_list("id", "claimed_by")[:limit]
    )


def inbox_item(conversation: Conversation) -> dict[str, Any]:
    """A conversation as the agent inbox lists it (agent sockets only). Unread is per agent: the
    frame carries how many customer messages there are and when the last came, and each page adds
    what it had not shown (docs/agent-workspace.md, "Unread")."""
    said = conversation.messages.exclude(role=Message.Role.SYSTEM)
    last = said.exclude(text="").exclude(_UNFINISHED).order_by("-created_at", "-id").first()
    counts = said.aggregate(**_INBOX_COUNTS)
    negative = Feedback.objects.filter(message__conversation=conversation, positive=False).exists()
    return _inbox_row(conversation, counts, last.text if last else "", negative)


# A reply still being written is not the row's last text: its half would show, and the row is read
# a moment after the customer's message (``InboxAnnouncer``), when the reply may have begun.
_UNFINISHED = Q(role=Message.Role.BOT, status__in=Message.ACTIVE_STATUSES)

_INBOX_COUNTS = {
    "total": Count("id"),
    "customer": Count("id", filter=Q(role=Message.Role.CUSTOMER)),
    "last_customer": Max("created_at", filter=Q(role=Message.Role.CUSTOMER)),
}


def inbox_items(conversation_ids: Iterable[Any]) -> list[dict[str, Any]]:
    """``inbox_item`` of many conversations in four queries, whatever their number: what the web
    process's inbox announcer sends for the conversations that changed since its last round
    (``events.inbox_touched``). Conversations that no longer exist are left out."""
    ids = list(conversation_ids)
    said = Message.objects.filter(conversation_id__in=ids).exclude(role=Message.Role.SYSTEM)
    last_text = said.filter(conversation=OuterRef("pk")).exclude(text="").exclude(_UNFINISHED)
    last_text = last_text.order_by("-created_at", "-id")
    conversations = (
        Conversation.objects.filter(id__in=ids)
        .select_related("customer", "agent", "assignee")
        .annotate(inbox_last_text=Subquery(last_text.values("text")[:1]))
    )
    counts: dict[Any, dict[str, Any]] = {}
    for row in said.values("conversation_id").annotate(**_INBOX_COUNTS):
        counts[row["conversation_id"]] = dict(row)
    negative = set(
        Feedback.objects.filter(message__conversation_id__in=ids, positive=False).values_list(
            "message__conversation_id", flat=True
        )
    )
    empty: dict[str, Any] = {"total": 0, "customer": 0, "last_customer": None}
    return [
        _inbox_row(c, counts.get(c.id, empty), getattr(c, "inbox_last_text", None) or "", c.id in negative)
        for c in conversations
    ]


def _inbox_row(conversation: Conversation, counts: dict[str, Any], last_text: str, negative: bool) -> dict[str, Any]:
    assignee = conversation.assignee if conversation.assignee_id else None
    return {
        "id": str(conversation.id),
        "status": conversation.status,
        "status_label": Conversation.Status(conversation.status).label,
        "customer": str(conversation.customer),
        "agent": roles.display_name(conversation.agent),
        "assignee": roles.display_name(assignee),
        "assignee_id": conversation.assignee_id,
        "created_at": _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
        "last_activity_at": _iso(conversation.last_activity_at),
        "waiting_since": _iso(conversation.waiting_since),
        "message_count": counts["total"],
        "customer_message_count": counts["customer"],
        "last_customer_at": _iso(counts["last_customer"]),
        "last_text": last_text[:140],
        "reviewed": conversation.reviewed,
        "has_negative": negative,
    }


def activity_payload(event: ConversationEvent) -> dict[str, Any]:
    """One event of a conversation as the agents' thread shows it ("Dana assigned it to Sam")."""
    return {
        "id": event.id,
        "kind": event.kind,
        "label": ConversationEvent.Kind(event.kind).label,
        "actor": roles.display_name(event.actor) if event.actor_id else "",
        "assignee": roles.display_name(event.assignee) if event.assignee_id else "",
        "created_at": _iso(event.created_at),
    }


def conversation_fresh(conversation_id: Any) -> Conversation:
    """The conversation as stored now, with what its payloads name (customer, agent)."""
    return Conversation.objects.select_related("customer", "agent", "assignee").get(id=conversation_id)


def history_frame(conversation: Conversation) -> dict[str, Any]:
    """The whole stored conversation, as an agent sees it; a customer's socket sends it through
    ``events.for_customer``, which drops what is agent-only (``model_version``, error details)."""
    conversation.refresh_from_db()
    state = health.worker_state()
    return {
        "type": "history",
        "conversation": conversation_payload(conversation),
        "messages": conversation_history(conversation),
        "feedback": customer_feedback(conversation),
        "customer": widget_selectors.customer_profile(conversation.customer_id),
        "worker": state,
        "worker_online": state == "online",
    }
