"""The sockets: the customer's chat at /ws/chat/ and the agents' at /ws/agent/.

Thin: validate a frame, call a service, publish events. The frames are documented in
docs/protocol.md. A customer's socket forwards only what ``events.for_customer`` lets through.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from . import events, health, limits, roles, selectors, services
from .models import Conversation, Customer, Feedback, Message
from .services import ChatError, Transition

T = TypeVar("T")

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY_SOCKETS = 4409
CLOSE_RATE_LIMITED = 4429


class ChatConsumer(AsyncWebsocketConsumer):
    customer: Customer
    conversation: Conversation
    address: str = "unknown"
    registered: bool = False  # counted among the customer's open sockets (limits.socket_register)
    keepalive: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self.address = limits.scope_ip(self.scope)[1]
        if not await limited(limits.socket_open_allowed, address=self.address):
            await self.refuse(CLOSE_RATE_LIMITED, SOCKETS_FROM_ADDRESS)
            return
        customer = await self._customer()
        if customer is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        conversation = await self._conversation(customer)
        if conversation is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.customer = customer
        if not await limited(limits.socket_register, customer_id=str(customer.id), channel=self.channel_name):
            await self.refuse(CLOSE_TOO_MANY_SOCKETS, SOCKETS_PER_CUSTOMER)
            return
        self.registered = True
        self.keepalive = asyncio.create_task(self._keep_registered())
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
        if hasattr(self, "conversation"):
            await self.channel_layer.group_discard(events.group_name(self.conversation.id), self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            if not await limited(limits.frame_allowed, address=self.address):
                raise ChatError(
                    "rate_limited",
                    f"Too many requests from your network: at most {settings.CHAT_ADDRESS_FRAMES} every "
                    f"{settings.CHAT_ADDRESS_WINDOW_S} seconds. Please wait a moment.",
                )
            frame = parse_frame(text_data, bytes_data)
            handler = self.HANDLERS.get(frame["type"])
            if handler is None:
                raise ChatError("unknown_type", f"Unknown frame type {frame['type']!r}.")
            await handler(self, frame)
        except ChatError as error:
            await self.send_json({"type": "error", "code": error.code, "detail": error.detail})
        except Conversation.DoesNotExist:  # erased under this socket: the page reconnects to a fresh one
            await self.close(code=CLOSE_NOT_FOUND)

    async def conversation_event(self, event: dict[str, Any]) -> None:
        frame = events.for_customer(event["payload"])
        if frame is not None:
            await self.send_json(frame)

    async def send_json(self, payload: dict[str, Any]) -> None:
        frame = events.for_customer(payload)  # every frame, direct or from the group: one filter
        if frame is not None:
            await self.send(text_data=json.dumps(frame))

    async def on_message(self, frame: dict[str, Any]) -> None:
        result = await database_sync_to_async(services.message_send)(
            conversation=self.conversation, text=frame.get("text"), client_id=frame.get("client_id")
        )
        if not result.created:  # a resend: echo the stored message to this socket only
            await self.send_json(events.message_event(selectors.message_payload(result.customer_message)))
            return
        await events.publish(
            self.conversation.id, events.message_event(selectors.message_payload(result.customer_message))
        )
        if result.handoff:
            await announce(Transition(self.conversation, result.stopped), alert=True)
        else:
            await announce_to_agents(self.conversation)
        if result.bot_message is not None:
            await events.publish(
                self.conversation.id, events.message_event(selectors.message_payload(result.bot_message))
            )
            notice = health.worker_notice(await database_sync_to_async(health.worker_state)())
            if notice is not None:
                await events.publish(self.conversation.id, notice)

    async def on_stop(self, frame: dict[str, Any]) -> None:
        message = await database_sync_to_async(self._stop)()
        if message is not None and message.status == "cancelled":
            await events.publish(self.conversation.id, events.done_event(message.id, message.text, message.status))

    async def on_retry(self, frame: dict[str, Any]) -> None:
        reply = await database_sync_to_async(services.reply_retry)(conversation=self.conversation)
        await events.publish(self.conversation.id, events.message_event(selectors.message_payload(reply)))

    async def on_new_conversation(self, frame: dict[str, Any]) -> None:
        previous = self.conversation
        conversation = await database_sync_to_async(services.conversation_start)(customer=self.customer)
        await self.channel_layer.group_discard(events.group_name(previous.id), self.channel_name)
        await announce(Transition(previous, None))  # agents see the old one closed
        await self._watch(conversation)

    async def on_handoff(self, frame: dict[str, Any]) -> None:
        transition = await database_sync_to_async(services.handoff_request)(conversation=self.conversation)
        if not transition.changed:  # asked twice: tell this socket again, do not alert the agents again
            await self.send_json(await status_frame(transition.conversation))
            return
        await announce(transition, alert=True)

    async def on_feedback(self, frame: dict[str, Any]) -> None:
        message, feedback = await database_sync_to_async(self._feedback)(frame)
        await self.send_json(
            {
                "type": "feedback",
                "message_id": message.id,
                "feedback": selectors.feedback_payload(feedback) if feedback else None,
            }
        )
        await events.publish_agents(
            events.review_event(
                str(self.conversation.id),
                {
                    "message_id": message.id,
                    "customer_feedback": selectors.feedback_payload(feedback) if feedback else None,
                },
            )
        )
        await announce_to_agents(self.conversation)  # the inbox row's negative flag may have changed

    async def on_satisfaction(self, frame: dict[str, Any]) -> None:
        conversation = await database_sync_to_async(services.satisfaction_set)(
            conversation=self.conversation, score=frame.get("score")
        )
        await self.send_json({"type": "satisfaction", "score": conversation.satisfaction})
        await events.publish_agents(
            events.review_event(str(conversation.id), {"satisfaction": conversation.satisfaction})
        )

    HANDLERS = {
        "message": on_message,
        "stop": on_stop,
        "retry": on_retry,
        "new_conversation": on_new_conversation,
        "handoff": on_handoff,
        "feedback": on_feedback,
        "satisfaction": on_satisfaction,
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


SOCKETS_FROM_ADDRESS = "Too many connections from your network. Please wait a minute, then reload the page."
SOCKETS_PER_CUSTOMER = "This chat is open in too many tabs or windows: close one of them, then reload the page."


async def limited(check: Callable[..., T], **kwargs: Any) -> T:
    """A limit's Redis round trip, off the event loop (and off the thread the database calls use)."""
    return await sync_to_async(check, thread_sensitive=False)(**kwargs)


class RoleCheckedConsumer(AsyncWebsocketConsumer):
    """A socket for signed-in users whom ``role_allows`` admits (agents, or staff).

    The role is checked at connect and again, fresh from the database, before every inbound frame
    and, at most every ``role_recheck_s`` seconds, before an outbound push: a user demoted or
    deactivated meanwhile is closed out (4403 / 4401) and hears nothing more.
    """

    role_recheck_s: float = 5.0
    role_checked_at: float = 0.0
    revoked: bool = False

    def role_allows(self, user: Any) -> bool:
        raise NotImplementedError

    async def admit(self) -> bool:
        """At connect: whether the user may open this socket; when not, the socket is closed."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return False
        if not await database_sync_to_async(self.role_allows)(user):
            await self.close(code=CLOSE_FORBIDDEN)
            return False
        self.user = user
        self.role_checked_at = time.monotonic()
        return True

    async def _role_holds(self, *, max_age_s: float) -> bool:
        """Whether the user still holds the role, asked afresh when the last answer is older than
        ``max_age_s``; when not, leave the groups at once (not when the client gets round to
        closing) and close with 4401 (deleted or deactivated) or 4403 (role lost)."""
        if self.revoked:
            return False
        if time.monotonic() - self.role_checked_at < max_age_s:
            return True
        code = await database_sync_to_async(self._role_refusal)()
        if code is None:
            self.role_checked_at = time.monotonic()
            return True
        self.revoked = True
        await self.disconnect(code)
        await self.close(code=code)
        return False

    def _role_refusal(self) -> int | None:
        user = roles.active_user(self.user.pk)
        if user is None:
            return CLOSE_UNAUTHENTICATED
        if not self.role_allows(user):
            return CLOSE_FORBIDDEN
        self.user = user
        return None


class AgentConsumer(RoleCheckedConsumer):
    """An agent's socket: the live inbox, and the conversation the agent has open (``watch``)."""

    watching: str | None = None

    def role_allows(self, user: Any) -> bool:
        return roles.is_agent(user)

    async def connect(self) -> None:
        if not await self.admit():
            return
        user = self.user
        await events.agents_join(self.channel_name)  # before accepting: no inbox event is missed
        await self.accept()
        await self.send_json({"type": "hello", "agent": roles.display_name(user)})

    async def disconnect(self, code: int) -> None:
        await events.agents_leave(self.channel_name)
        if self.watching:
            await events.conversation_leave(self.watching, self.channel_name)
            self.watching = None

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not await self._role_holds(max_age_s=0):
            return
        try:
            frame = parse_frame(text_data, bytes_data)
            handler = self.HANDLERS.get(frame["type"])
            if handler is None:
                raise ChatError("unknown_type", f"Unknown frame type {frame['type']!r}.")
            conversation = await database_sync_to_async(selectors.conversation_for_agent)(frame.get("conversation_id"))
            if conversation is None:
                raise ChatError("not_found", "No such conversation.")
            await handler(self, conversation, frame)
        except ChatError as error:
            await self.send_json({"type": "error", "code": error.code, "detail": error.detail})

    async def conversation_event(self, event: dict[str, Any]) -> None:
        if self.watching and await self._role_holds(max_age_s=self.role_recheck_s):
            await self.send_json({**event["payload"], "conversation_id": self.watching})

    async def agents_event(self, event: dict[str, Any]) -> None:
        if await self._role_holds(max_age_s=self.role_recheck_s):
            await self.send_json(event["payload"])

    async def send_json(self, payload: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(payload))

    async def on_watch(self, conversation: Conversation, frame: dict[str, Any]) -> None:
        """Follow one conversation live; the history comes after joining, so nothing falls between."""
        if self.watching:
            await events.conversation_leave(self.watching, self.channel_name)
        self.watching = str(conversation.id)
        await events.conversation_join(conversation.id, self.channel_name)
        history = await database_sync_to_async(history_frame)(conversation)
        await self.send_json({**history, "conversation_id": self.watching})

    async def _transition(self, change: Any, conversation: Conversation) -> None:
        """Take over, hand back or close: one service call, then its events to everyone concerned."""
        transition = await database_sync_to_async(change)(conversation=conversation, agent=self.user)
        await announce(transition)

    async def on_takeover(self, conversation: Conversation, frame: dict[str, Any]) -> None:
        await self._transition(services.conversation_takeover, conversation)

    async def on_hand_back(self, conversation: Conversation, frame: dict[str, Any]) -> None:
        await self._transition(services.conversation_hand_back, conversation)

    async def on_close(self, conversation: Conversation, frame: dict[str, Any]) -> None:
        await self._transition(services.conversation_close, conversation)

    async def on_message(self, conversation: Conversation, frame: dict[str, Any]) -> None:
        result = await database_sync_to_async(services.agent_message_send)(
            conversation=conversation, agent=self.user, text=frame.get("text"), client_id=frame.get("client_id")
        )
        payload = events.message_event(await database_sync_to_async(selectors.message_payload)(result.customer_message))
        if not result.created:
            await self.send_json({**payload, "conversation_id": str(conversation.id)})
            return
        await events.publish(conversation.id, payload)
        await announce_to_agents(conversation)

    HANDLERS = {
        "watch": on_watch,
        "takeover": on_takeover,
        "hand_back": on_hand_back,
        "close": on_close,
        "message": on_message,
    }


async def announce(transition: Transition, *, alert: bool = False) -> None:
    """Tell everyone a conversation changed hands: its group (customer and watching agents) and the inbox."""
    conversation, stopped = transition.conversation, transition.stopped
    if stopped is not None and stopped.status == Message.Status.CANCELLED:
        await events.publish(conversation.id, events.done_event(stopped.id, stopped.text, stopped.status))
    await events.publish(conversation.id, await status_frame(conversation))
    await announce_to_agents(conversation, alert=alert and conversation.status == Conversation.Status.WAITING)


async def status_frame(conversation: Conversation) -> dict[str, Any]:
    @database_sync_to_async
    def payload() -> dict[str, Any]:
        conversation.refresh_from_db()
        return selectors.conversation_payload(conversation)

    return events.status_event(await payload())


async def announce_to_agents(conversation: Conversation, *, alert: bool = False) -> None:
    item = await database_sync_to_async(_fresh_inbox_item)(conversation)
    await events.publish_agents(events.inbox_event(item, alert=alert))


def _fresh_inbox_item(conversation: Conversation) -> dict[str, Any]:
    fresh = Conversation.objects.select_related("customer", "agent").get(id=conversation.id)
    return selectors.inbox_item(fresh)


def message_in(conversation: Conversation, message_id: Any) -> Message:
    if isinstance(message_id, bool) or not isinstance(message_id, int):
        raise ChatError("not_found", "message_id must be the id of a reply in this conversation.")
    message = conversation.messages.filter(id=message_id).first()
    if message is None:
        raise ChatError("not_found", "No such reply in this conversation.")
    return message


def history_frame(conversation: Conversation) -> dict[str, Any]:
    """The whole stored conversation, as an agent sees it; a customer's socket sends it through
    ``events.for_customer``, which drops what is agent-only (``model_version``, error details)."""
    conversation.refresh_from_db()
    return {
        "type": "history",
        "conversation": selectors.conversation_payload(conversation),
        "messages": selectors.conversation_history(conversation),
        "feedback": selectors.customer_feedback(conversation),
        **_worker(health.worker_state()),
    }


def _worker(state: health.WorkerState) -> dict[str, Any]:
    return {"worker": state, "worker_online": state == "online"}


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
