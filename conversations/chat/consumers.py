"""The customer's socket, /ws/chat/: validate a frame, call a service, forward the frames.

The services send every frame that follows a write (``events``); this socket only answers
itself (a resend's echo, an acknowledgement) and forwards what its conversation's group carries,
through ``events.for_customer``. The frames are documented in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings

from .. import events, limits, selectors
from ..errors import ChatError
from ..events import in_database
from ..models import Conversation, Customer, Feedback, Message
from ..sockets import (
    CLOSE_NOT_FOUND,
    CLOSE_RATE_LIMITED,
    CLOSE_TOO_MANY_SOCKETS,
    CLOSE_UNAUTHENTICATED,
    JsonSocket,
    error_frame,
    handler_for,
    limited,
    parse_frame,
)
from ..widget import services as widget_services
from . import services

SOCKETS_FROM_ADDRESS = "Too many connections from your network. Please wait a minute, then reload the page."
SOCKETS_PER_CUSTOMER = "This chat is open in too many tabs or windows: close one of them, then reload the page."


class ChatConsumer(JsonSocket):
    customer: Customer
    conversation: Conversation
    address: str = "unknown"
    registered: bool = False  # counted among the customer's open sockets (limits.socket_register)
    by_token: bool = False  # a widget's socket: in the customer's group, closed when their tokens are revoked
    keepalive: asyncio.Task[None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.typing = services.TypingThrottle()  # this socket's own: at most one typing frame a second

    async def connect(self) -> None:
        self.address = limits.scope_ip(self.scope)[1]
        if not await limited(limits.socket_open_allowed, address=self.address):
            await self.refuse(CLOSE_RATE_LIMITED, SOCKETS_FROM_ADDRESS)
            return
        customer = await in_database(self._customer)()
        if customer is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        conversation = await in_database(self._conversation)(customer)
        if conversation is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await in_database(self._remember_where)(conversation)
        self.customer = customer
        if not await limited(limits.socket_register, customer_id=str(customer.id), channel=self.channel_name):
            await self.refuse(CLOSE_TOO_MANY_SOCKETS, SOCKETS_PER_CUSTOMER)
            return
        self.registered = True
        self.keepalive = asyncio.create_task(self._keep_registered())
        if self._has_token():
            self.by_token = True
            await events.customer_join(customer.id, self.channel_name)
        await self.accept()
        await self._watch(conversation)

    async def refuse(self, code: int, reason: str) -> None:
        """Accepted, then closed: a handshake refused outright reaches a browser as a bare 1006,
        while a close after accepting carries the code (the page words it: daphne drops the
        reason, which other servers pass on)."""
        await self.accept()
        await self.close(code=code, reason=reason)

    async def _keep_registered(self) -> None:
        while True:
            await asyncio.sleep(limits.SOCKET_REFRESH_S)
            await limited(limits.socket_refresh, customer_id=str(self.customer.id), channel=self.channel_name)

    async def disconnect(self, code: int) -> None:
        if self.keepalive is not None:
            self.keepalive.cancel()
        if self.registered:
            self.registered = False
            await limited(limits.socket_unregister, customer_id=str(self.customer.id), channel=self.channel_name)
        if self.by_token:
            await events.customer_leave(self.customer.id, self.channel_name)
        if hasattr(self, "conversation"):
            await events.conversation_leave(self.conversation.id, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            if not await limited(limits.frame_allowed, address=self.address):
                raise ChatError(
                    "rate_limited",
                    f"Too many requests from your network: at most {settings.CHAT_ADDRESS_FRAMES} every "
                    f"{settings.CHAT_ADDRESS_WINDOW_S} seconds. Please wait a moment.",
                )
            frame = parse_frame(text_data, bytes_data)
            await handler_for(self.HANDLERS, frame)(self, frame)
        except ChatError as error:
            await self.send_json(error_frame(error))
        except Conversation.DoesNotExist:  # erased under this socket: the page reconnects to a fresh one
            await self.close(code=CLOSE_NOT_FOUND)

    async def conversation_event(self, event: dict[str, Any]) -> None:
        for payload in events.payloads_of(event):
            if payload.get("type") == events.SIGNED_OUT:  # the customer's tokens were revoked
                await self.close(code=CLOSE_UNAUTHENTICATED)
                return
            await self.send_json(payload)

    async def send_json(self, payload: dict[str, Any]) -> None:
        frame = events.for_customer(payload)  # every frame, direct or from the group: one filter
        if frame is not None:
            await super().send_json(frame)

    async def on_message(self, frame: dict[str, Any]) -> None:
        result = await in_database(services.message_send)(
            conversation=self.conversation, text=frame.get("text"), client_id=frame.get("client_id")
        )
        if not result.created:  # a resend: echo the stored message to this socket only
            await self.send_json(events.message_event(selectors.message_payload(result.customer_message)))

    async def on_stop(self, frame: dict[str, Any]) -> None:
        await in_database(self._stop)()

    async def on_retry(self, frame: dict[str, Any]) -> None:
        await in_database(services.reply_retry)(conversation=self.conversation)

    async def on_new_conversation(self, frame: dict[str, Any]) -> None:
        """Leave the old conversation's group first: what closing it sends is for the agents."""
        previous = self.conversation
        await events.conversation_leave(previous.id, self.channel_name)
        try:
            conversation = await in_database(services.conversation_start)(customer=self.customer)
        except ChatError:
            await events.conversation_join(previous.id, self.channel_name)
            raise
        await in_database(self._remember_where)(conversation)
        await self._watch(conversation)

    async def on_handoff(self, frame: dict[str, Any]) -> None:
        transition = await in_database(services.handoff_request)(conversation=self.conversation)
        if not transition.changed:  # asked twice: tell this socket again, do not alert the agents again
            await self.send_json(await in_database(events.status_frame)(transition.conversation))

    async def on_feedback(self, frame: dict[str, Any]) -> None:
        message, feedback = await in_database(self._feedback)(frame)
        await self.send_json(
            {
                "type": "feedback",
                "message_id": message.id,
                "feedback": selectors.feedback_payload(feedback) if feedback else None,
            }
        )

    async def on_typing(self, frame: dict[str, Any]) -> None:
        """The customer types: throttled here, then for the agents only while a person is involved."""
        if self.typing.allow(time.monotonic()):
            await in_database(services.customer_typing_send)(conversation=self.conversation)

    async def on_satisfaction(self, frame: dict[str, Any]) -> None:
        conversation = await in_database(services.satisfaction_set)(
            conversation=self.conversation, score=frame.get("score")
        )
        await self.send_json({"type": "satisfaction", "score": conversation.satisfaction})

    async def on_profile(self, frame: dict[str, Any]) -> None:
        """The pre-chat form: the customer's name and e-mail, stored on the customer."""
        customer = await in_database(widget_services.customer_profile_set)(
            customer=self.customer, name=frame.get("name", ""), email=frame.get("email", "")
        )
        await self.send_json({"type": "profile", "customer": {"name": customer.display_name, "email": customer.email}})

    HANDLERS = {
        "message": on_message,
        "stop": on_stop,
        "retry": on_retry,
        "new_conversation": on_new_conversation,
        "handoff": on_handoff,
        "feedback": on_feedback,
        "satisfaction": on_satisfaction,
        "profile": on_profile,
        "typing": on_typing,
    }

    async def _watch(self, conversation: Conversation) -> None:
        """Join the conversation's group first, then read history: no event falls in between."""
        self.conversation = conversation
        await events.conversation_join(conversation.id, self.channel_name)
        await self.send_json(await in_database(selectors.history_frame)(conversation))

    def _query(self, name: str) -> str:
        values = parse_qs(self.scope.get("query_string", b"").decode()).get(name)
        return values[0] if values else ""

    def _has_token(self) -> bool:
        return "token" in parse_qs(self.scope.get("query_string", b"").decode(), keep_blank_values=True)

    def _customer(self) -> Customer | None:
        """The widget's customer by its signed token when the query has one (a bad token gets
        nothing, not the session's customer), else the page's by its session cookie."""
        if self._has_token():
            return widget_services.customer_of_token(self._query("token"))
        return services.customer_of_session(self.scope["session"])

    def _remember_where(self, conversation: Conversation) -> None:
        headers = dict(self.scope.get("headers") or [])
        widget_services.conversation_context_set(
            conversation=conversation,
            page_url=self._query("page"),
            user_agent=headers.get(b"user-agent", b"").decode("latin-1"),
        )

    def _conversation(self, customer: Customer) -> Conversation | None:
        wanted = parse_qs(self.scope.get("query_string", b"").decode()).get("conversation")
        if wanted:
            return selectors.conversation_of_customer(customer, wanted[0])
        return services.conversation_current(customer=customer)

    def _stop(self) -> None:
        reply = selectors.reply_in_flight(self.conversation)
        if reply is not None:
            services.reply_stop(message=reply)

    def _feedback(self, frame: dict[str, Any]) -> tuple[Message, Feedback | None]:
        message = message_in(self.conversation, frame.get("message_id"))
        feedback = services.feedback_set(
            message=message,
            source=Feedback.Source.CUSTOMER,
            positive=frame.get("positive"),
            reason=frame.get("reason", ""),
            comment=frame.get("comment", ""),
        )
        return message, feedback


def message_in(conversation: Conversation, message_id: Any) -> Message:
    if isinstance(message_id, bool) or not isinstance(message_id, int):
        raise ChatError("not_found", "message_id must be the id of a reply in this conversation.")
    message = conversation.messages.filter(id=message_id).first()
    if message is None:
        raise ChatError("not_found", "No such reply in this conversation.")
    return message
