"""The only code that talks to the channel layer.

Every event for a conversation goes to its group; each socket in the group decides, by its role,
what to forward (see ``consumers``). Payloads are the wire frames of docs/protocol.md.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

EVENT_HANDLER = "conversation.event"  # dispatched to ``conversation_event`` on each consumer


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
