"""The customer's chat socket at /ws/chat/. Thin: validate a frame, call a service, forward events.

The frames are documented in docs/protocol.md.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from . import dispatch, events, selectors, services
from .models import Conversation, Customer
from .services import ChatError

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404


class ChatConsumer(AsyncWebsocketConsumer):
    customer: Customer
    conversation: Conversation

    async def connect(self) -> None:
        customer = await self._customer()
        if customer is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        conversation = await self._conversation(customer)
        if conversation is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.customer = customer
        await self.accept()
        await self._watch(conversation)

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "conversation"):
            await self.channel_layer.group_discard(events.group_name(self.conversation.id), self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            frame = parse_frame(text_data, bytes_data)
            handler = self.HANDLERS.get(frame["type"])
            if handler is None:
                raise ChatError("unknown_type", f"Unknown frame type {frame['type']!r}.")
            await handler(self, frame)
        except ChatError as error:
            await self.send_json({"type": "error", "code": error.code, "detail": error.detail})

    async def conversation_event(self, event: dict[str, Any]) -> None:
        await self.send_json(event["payload"])

    async def send_json(self, payload: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(payload))

    async def on_message(self, frame: dict[str, Any]) -> None:
        result = await database_sync_to_async(services.message_send)(
            conversation=self.conversation, text=frame.get("text"), client_id=frame.get("client_id")
        )
        if not result.created:  # a resend: echo the stored message to this socket only
            await self.send_json(events.message_event(selectors.message_payload(result.customer_message)))
            return
        await events.publish(self.conversation.id, events.message_event(selectors.message_payload(result.customer_message)))
        if result.bot_message is not None:
            await events.publish(self.conversation.id, events.message_event(selectors.message_payload(result.bot_message)))
            if not await database_sync_to_async(dispatch.worker_online)():
                await self.send_json(WORKER_OFFLINE_NOTICE)

    async def on_stop(self, frame: dict[str, Any]) -> None:
        message = await database_sync_to_async(self._stop)()
        if message is not None and message.status == "cancelled":
            await events.publish(self.conversation.id, events.done_event(message.id, message.text, message.status))

    async def on_retry(self, frame: dict[str, Any]) -> None:
        reply = await database_sync_to_async(services.reply_retry)(conversation=self.conversation)
        await events.publish(self.conversation.id, events.message_event(selectors.message_payload(reply)))

    async def on_new_conversation(self, frame: dict[str, Any]) -> None:
        conversation = await database_sync_to_async(services.conversation_start)(customer=self.customer)
        await self.channel_layer.group_discard(events.group_name(self.conversation.id), self.channel_name)
        await self._watch(conversation)

    HANDLERS = {
        "message": on_message,
        "stop": on_stop,
        "retry": on_retry,
        "new_conversation": on_new_conversation,
    }

    async def _watch(self, conversation: Conversation) -> None:
        """Join the conversation's group first, then read history: no event falls in between."""
        self.conversation = conversation
        await self.channel_layer.group_add(events.group_name(conversation.id), self.channel_name)
        await self.send_json(await database_sync_to_async(history_frame)(conversation))

    @database_sync_to_async
    def _customer(self) -> Customer | None:
        customer_id = self.scope["session"].get("customer_id")
        return Customer.objects.filter(id=customer_id).first() if customer_id else None

    @database_sync_to_async
    def _conversation(self, customer: Customer) -> Conversation | None:
        wanted = parse_qs(self.scope.get("query_string", b"").decode()).get("conversation")
        if wanted:
            return selectors.conversation_of_customer(customer, wanted[0])
        return services.conversation_current(customer=customer)

    def _stop(self) -> Any:
        reply = selectors.reply_in_flight(self.conversation)
        return services.reply_stop(message=reply) if reply else None


WORKER_OFFLINE_NOTICE = {
    "type": "notice",
    "code": "worker_offline",
    "detail": "The assistant is not running right now. Your message is saved and will be answered as soon as it is back.",
}


def history_frame(conversation: Conversation) -> dict[str, Any]:
    conversation.refresh_from_db()
    return {
        "type": "history",
        "conversation": selectors.conversation_payload(conversation),
        "messages": selectors.conversation_history(conversation),
        "worker_online": dispatch.worker_online(),
    }


def parse_frame(text_data: str | None, bytes_data: bytes | None) -> dict[str, Any]:
    if text_data is None:
        raise ChatError("binary_not_supported", "Send frames as JSON text, not binary.")
    try:
        frame = json.loads(text_data)
    except ValueError:
        raise ChatError("invalid_json", "A frame must be a JSON object.") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise ChatError("invalid_frame", 'A frame must be a JSON object with a string "type".')
    return frame
