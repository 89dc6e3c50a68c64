"""Reads, and the one place that decides what a message looks like on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError

from .models import Conversation, Customer, Message


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
    }


def conversation_payload(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.id),
        "status": conversation.status,
        "created_at": _iso(conversation.created_at),
    }


def conversation_history(conversation: Conversation) -> list[dict[str, Any]]:
    return [message_payload(m) for m in conversation.messages.exclude(role=Message.Role.SYSTEM)]


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
