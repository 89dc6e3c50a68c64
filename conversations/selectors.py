"""Reads, and the one place that decides what a message looks like on the wire."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from . import roles
from .models import Conversation, Customer, Feedback, Message


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def message_payload(message: Message) -> dict[str, Any]:
    """A message as customers' and agents' sockets receive it."""
    return {
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
        "model_version": message.model_version.name if message.model_version_id else None,  # agents only
    }


def message_payload_by_id(message_id: int) -> dict[str, Any]:
    return message_payload(Message.objects.select_related("author", "model_version").get(id=message_id))


def conversation_payload(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.id),
        "status": conversation.status,
        "created_at": _iso(conversation.created_at),
        "agent": roles.display_name(conversation.agent) if conversation.status == Conversation.Status.AGENT else "",
        "satisfaction": conversation.satisfaction,
    }


def customer_feedback(conversation: Conversation) -> dict[str, dict[str, Any]]:
    """The customer's own ratings, by message id: restores their thumbs after a reload."""
    rows = Feedback.objects.filter(message__conversation=conversation, source=Feedback.Source.CUSTOMER)
    return {str(f.message_id): feedback_payload(f) for f in rows}


def feedback_payload(feedback: Feedback) -> dict[str, Any]:
    return {"positive": feedback.positive, "reason": feedback.reason, "comment": feedback.comment}


def conversation_history(conversation: Conversation) -> list[dict[str, Any]]:
    messages = conversation.messages.exclude(role=Message.Role.SYSTEM).select_related("author", "model_version")
    return [message_payload(m) for m in messages]


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


def conversation_for_agent(conversation_id: Any) -> Conversation | None:
    try:
        return Conversation.objects.select_related("customer", "agent").filter(id=conversation_id).first()
    except ValidationError:  # not a UUID
        return None


# The agent inbox.


@dataclass(frozen=True)
class InboxFilters:
    status: str = ""
    negative: bool = False
    reviewed: str = ""  # "", "yes", "no"
    since: date | None = None
    until: date | None = None
    model_version: int | None = None
    q: str = ""


def inbox_filters(params: Any) -> InboxFilters:
    """Filters from a query string; values that do not parse are ignored, never an error page."""
    status = params.get("status", "")
    reviewed = params.get("reviewed", "")
    version = params.get("model_version", "")
    return InboxFilters(
        status=status if status in Conversation.Status.values else "",
        negative=params.get("negative") in ("1", "on", "true"),
        reviewed=reviewed if reviewed in ("yes", "no") else "",
        since=_date(params.get("since", "")),
        until=_date(params.get("until", "")),
        model_version=int(version) if version.isdigit() else None,
        q=params.get("q", "").strip()[:200],
    )


def _date(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def inbox(filters: InboxFilters) -> QuerySet[Conversation]:
    """Conversations with at least one message, newest first, narrowed by ``filters``."""
    negative = Feedback.objects.filter(message__conversation=OuterRef("pk"), positive=False)
    conversations = (
        Conversation.objects.select_related("customer", "agent")
        .annotate(
            message_count=Count("messages", filter=~Q(messages__role=Message.Role.SYSTEM)),
            has_negative=Exists(negative),
            last_text=Subquery(
                Message.objects.filter(conversation=OuterRef("pk"))
                .exclude(role=Message.Role.SYSTEM)
                .exclude(text="")
                .order_by("-created_at", "-id")
                .values("text")[:1]
            ),
        )
        .filter(message_count__gt=0)
        .order_by("-created_at")
    )
    if filters.status:
        conversations = conversations.filter(status=filters.status)
    if filters.negative:
        conversations = conversations.filter(has_negative=True)
    if filters.reviewed:
        conversations = conversations.filter(reviewed=filters.reviewed == "yes")
    if filters.since:
        conversations = conversations.filter(created_at__date__gte=filters.since)
    if filters.until:
        conversations = conversations.filter(created_at__date__lte=filters.until)
    if filters.model_version is not None:
        conversations = conversations.filter(
            Exists(Message.objects.filter(conversation=OuterRef("pk"), model_version_id=filters.model_version))
        )
    if filters.q:
        conversations = conversations.filter(id__in=messages_matching(filters.q).values("conversation_id"))
    return conversations


def messages_matching(query: str) -> QuerySet[Message]:
    """Full-text search on PostgreSQL (stemmed, web-search syntax); a substring match elsewhere."""
    if connection.vendor == "postgresql":
        from django.contrib.postgres.search import SearchQuery, SearchVector

        return Message.objects.annotate(search=SearchVector("text", config="english")).filter(
            search=SearchQuery(query, config="english", search_type="websearch")
        )
    return Message.objects.filter(text__icontains=query)


def inbox_item(conversation: Conversation) -> dict[str, Any]:
    """A conversation as the agent inbox lists it (agent sockets only)."""
    last = (
        conversation.messages.exclude(role=Message.Role.SYSTEM).exclude(text="").order_by("-created_at", "-id").first()
    )
    return {
        "id": str(conversation.id),
        "status": conversation.status,
        "status_label": Conversation.Status(conversation.status).label,
        "customer": str(conversation.customer),
        "agent": roles.display_name(conversation.agent),
        "created_at": _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
        "last_text": last.text[:140] if last else "",
        "reviewed": conversation.reviewed,
        "has_negative": Feedback.objects.filter(message__conversation=conversation, positive=False).exists(),
    }


def transcript(conversation: Conversation) -> list[Message]:
    """Every message with what the agent's transcript shows next to it, in two queries."""
    return list(
        conversation.messages.select_related("author", "model_version", "correction")
        .prefetch_related("feedback")
        .order_by("created_at", "id")
    )
