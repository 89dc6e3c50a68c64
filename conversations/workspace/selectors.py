"""The agents' reads: the inbox and its filters, a conversation by id, a transcript."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery

from ..models import Conversation, Feedback, Message


def conversation_for_agent(conversation_id: Any) -> Conversation | None:
    try:
        return Conversation.objects.select_related("customer", "agent").filter(id=conversation_id).first()
    except ValidationError:  # not a UUID
        return None


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
    """Full-text search on PostgreSQL (stemmed, web-search syntax); a substring match elsewhere.
    Not the system lines: searching an agent's name finds what people wrote, not every takeover."""
    said = Message.objects.exclude(role=Message.Role.SYSTEM)
    if connection.vendor == "postgresql":
        from django.contrib.postgres.search import SearchQuery, SearchVector

        return said.annotate(search=SearchVector("text", config="english")).filter(
            search=SearchQuery(query, config="english", search_type="websearch")
        )
    return said.filter(text__icontains=query)


def transcript(conversation: Conversation) -> list[Message]:
    """Every message with what the agent's transcript shows next to it, in two queries."""
    return list(
        conversation.messages.select_related("author", "model_version", "correction")
        .prefetch_related("feedback")
        .order_by("created_at", "id")
    )
