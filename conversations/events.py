"""The only code that talks to the channel layer.

Two kinds of group. Every event for a conversation goes to its group, ``conversation.<uuid>``,
which the customer's sockets and the agents watching it join: only frames a customer may see go
there, and ``for_customer`` filters again on the customer's side. Everything agent-only (the inbox,
ratings, notes, corrections, tags) goes to the ``agents`` group, which only agent sockets join.
Payloads are the wire frames of docs/protocol.md.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

EVENT_HANDLER = "conversation.event"  # dispatched to ``conversation_event`` on each consumer
AGENTS_GROUP = "agents"
AGENTS_HANDLER = "agents.event"  # dispatched to ``agents_event`` on agent consumers

# What may reach a customer's socket, frame type by frame type, and the keys each may carry.
CUSTOMER_FRAMES: dict[str, set[str]] = {
    "message": {"type", "message"},
    "delta": {"type", "message_id", "offset", "text"},
    "done": {"type", "message_id", "text", "status", "error"},
    "status": {"type", "conversation"},
    "notice": {"type", "code", "detail"},
}
CUSTOMER_MESSAGE_KEYS = {
    "id",
    "role",
    "text",
    "status",
    "client_id",
    "created_at",
    "first_token_at",
    "finished_at",
    "token_count",
    "model",
    "error",
    "author",
}
CUSTOMER_CONVERSATION_KEYS = {"id", "status", "created_at", "agent", "satisfaction"}


def group_name(conversation_id: UUID | str) -> str:
    return f"conversation.{conversation_id}"


async def publish(conversation_id: UUID | str, payload: dict[str, Any]) -> None:
    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS is not configured"
    await layer.group_send(group_name(conversation_id), {"type": EVENT_HANDLER, "payload": payload})


def publish_sync(conversation_id: UUID | str, payload: dict[str, Any]) -> None:
    async_to_sync(publish)(conversation_id, payload)


def message_event(message_payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "message": message_payload}


def delta_event(message_id: int, offset: int, text: str) -> dict[str, Any]:
    return {"type": "delta", "message_id": message_id, "offset": offset, "text": text}


def done_event(message_id: int, text: str, status: str, error: str = "") -> dict[str, Any]:
    return {"type": "done", "message_id": message_id, "text": text, "status": status, "error": error}


def status_event(conversation_payload: dict[str, Any]) -> dict[str, Any]:
    """The conversation's state changed: who holds it, whether it is closed."""
    return {"type": "status", "conversation": conversation_payload}


def for_customer(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The frame as a customer may see it, or None when it is not for customers at all.

    The conversation group should only ever carry customer-safe frames; this is the second lock,
    so a frame published to the wrong group still cannot leak agent-only data.
    """
    allowed = CUSTOMER_FRAMES.get(payload.get("type", ""))
    if allowed is None:
        return None
    frame = {k: v for k, v in payload.items() if k in allowed}
    if "message" in frame:
        if not isinstance(frame["message"], dict) or frame["message"].get("role") == "system":
            return None
        frame["message"] = {k: v for k, v in frame["message"].items() if k in CUSTOMER_MESSAGE_KEYS}
    if "conversation" in frame:
        if not isinstance(frame["conversation"], dict):
            return None
        frame["conversation"] = {k: v for k, v in frame["conversation"].items() if k in CUSTOMER_CONVERSATION_KEYS}
    return frame


# The agents' group: the inbox and everything agent-only.


async def agents_join(channel_name: str) -> None:
    await _layer().group_add(AGENTS_GROUP, channel_name)


async def agents_leave(channel_name: str) -> None:
    await _layer().group_discard(AGENTS_GROUP, channel_name)


async def conversation_join(conversation_id: UUID | str, channel_name: str) -> None:
    await _layer().group_add(group_name(conversation_id), channel_name)


async def conversation_leave(conversation_id: UUID | str, channel_name: str) -> None:
    await _layer().group_discard(group_name(conversation_id), channel_name)


async def publish_agents(payload: dict[str, Any]) -> None:
    await _layer().group_send(AGENTS_GROUP, {"type": AGENTS_HANDLER, "payload": payload})


def publish_agents_sync(payload: dict[str, Any]) -> None:
    async_to_sync(publish_agents)(payload)


def _layer() -> Any:
    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS is not configured"
    return layer


def inbox_event(item: dict[str, Any], *, alert: bool = False) -> dict[str, Any]:
    """A conversation to add or refresh in the inbox; ``alert`` when it waits for an agent."""
    return {"type": "inbox", "conversation": item, "alert": alert}


def review_event(conversation_id: str, review: dict[str, Any]) -> dict[str, Any]:
    """Agent-only state of a conversation or a reply changed (tags, note, flags, rating, correction)."""
    return {"type": "review", "conversation_id": conversation_id, **review}
