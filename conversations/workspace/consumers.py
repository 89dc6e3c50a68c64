"""The agents' socket, /ws/agent/: the live inbox, and the conversation the agent has open.

Thin: validate a frame, call a service (which sends what follows its write, ``events``), and
forward what the agents' group and the watched conversation's group carry. docs/protocol.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from .. import events, roles, selectors
from ..chat.services import TypingThrottle
from ..errors import ChatError
from ..events import in_database
from ..models import Conversation
from ..sockets import RoleCheckedConsumer, error_frame, handler_for, parse_frame
from . import selectors as workspace_selectors
from . import services


class AgentConsumer(RoleCheckedConsumer):
    """An agent's socket: the live inbox, and the conversation the agent has open (``watch``)."""

    watching: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.typing = TypingThrottle()  # this socket's own: at most one typing frame a second

    def role_allows(self, user: Any) -> bool:
        return roles.is_agent(user)

    async def connect(self) -> None:
        if not await self.admit():
            return
        user = self.user
        await events.agents_join(self.channel_name)  # before accepting: no inbox event is missed
        await events.agent_join(user.id, self.channel_name)  # this agent's own: read marks
        await self.accept()
        await self._present()
        await self.send_json({"type": "hello", "agent": roles.display_name(user), "agent_id": user.id})

    async def _present(self) -> None:
        """Count this agent online for a while (auto-assignment); Redis down: only that is lost."""
        try:
            await in_database(services.presence_touch)(user_id=self.user.id, channel_name=self.channel_name)
        except redis.RedisError:
            pass

    async def disconnect(self, code: int) -> None:
        await events.agents_leave(self.channel_name)
        user = getattr(self, "user", None)
        if user is not None and user.is_authenticated:
            await events.agent_leave(user.id, self.channel_name)
            try:
                await in_database(services.presence_drop)(user_id=user.id, channel_name=self.channel_name)
            except redis.RedisError:
                pass
        if self.watching:
            await events.conversation_leave(self.watching, self.channel_name)
            self.watching = None

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not await self._role_holds(max_age_s=0):
            return
        try:
            frame = parse_frame(text_data, bytes_data)
            if frame.get("type") == "presence":  # the page is still open (every 30 s): no conversation
                await self._present()
                return
            handler = handler_for(self.HANDLERS, frame)
            conversation = await in_database(workspace_selectors.conversation_for_agent)(frame.get("conversation_id"))
            if conversation is None:
                raise ChatError("not_found", "No such conversation.")
            await handler(self, conversation, frame)
        except ChatError as error:
            await self.send_json(error_frame(error))

    async def conversation_event(self, event: dict[str, Any]) -> None:
        if self.watching and await self._role_holds(max_age_s=self.role_recheck_s):
            for payload in events.payloads_of(event):
                await self.send_json({**payload, "conversation_id": self.watching})

    async def agents_event(self, event: dict[str, Any]) -> None:
        if await self._role_holds(max_age_s=self.role_recheck_s):
            for payload in events.payloads_of(event):
                await self.send_json(payload)

    async def on_watch(self, conversation: Conversation, frame: dict[str, Any]) -> None:
        """Follow one conversation live; the history comes after joining, so nothing falls between."""
        if self.watching:
            await events.conversation_leave(self.watching, self.channel_name)
        self.watching = str(conversation.id)
        await events.conversation_join(conversation.id, self.channel_name)
        history = await in_database(selectors.history_frame)(conversation)
        await self.send_json({**history, "conversation_id": self.watching})
        await in_database(services.conversation_read)(conversation=conversation, user=self.user)

    async def on_read(self, conversation: Conversation, frame: dict[str, Any]) -> None:
        """The page showed the conversation's new messages to the agent: read up to now."""
        await in_database(services.conversation_read)(conversation=conversation, user=self.user)

    async def on_assign(self, conversation: Conversation, frame: dict[str, Any]) -> None:
        """``assignee``: an agent's id, "me", or empty/None to unassign."""
        raw = frame.get("assignee")

        def assign() -> None:
            assignee = self.user if raw == "me" else services.assignee_of(raw)
            services.conversation_assign(conversation=conversation, actor=self.user, assignee=assignee)

        await in_database(assign)()

    async def _transition(self, change: Callable[..., Any], conversation: Conversation) -> None:
        await in_database(change)(conversation=conversation, agent=self.user)

    async def on_takeover(self, conversation: Conversation, frame: dict[str, Any]) -> None:
        await self._transition(services.conversation_takeover, conversation)

    async def on_hand_back(self, conversation: Conversation, frame: dict[str, Any]) -> None:
        await self._transition(services.conversation_hand_back, conversation)

    async def on_close(self, conversation: Conversation, frame: dict[str, Any]) -> None:
        await self._transition(services.conversation_close, conversation)

    async def on_message(self, conversation: Conversation, frame: dict[str, Any]) -> None:
        result = await in_database(services.agent_message_send)(
            conversation=conversation, agent=self.user, text=frame.get("text"), client_id=frame.get("client_id")
        )
        if not result.created:  # a resend: echo the stored message to this socket only
            payload = await in_database(selectors.message_payload)(result.customer_message)
            await self.send_json({**events.message_event(payload), "conversation_id": str(conversation.id)})

    async def on_typing(self, conversation: Conversation, frame: dict[str, Any]) -> None:
        if self.typing.allow(time.monotonic()):
            await in_database(services.agent_typing_send)(conversation=conversation, agent=self.user)

    HANDLERS = {
        "watch": on_watch,
        "takeover": on_takeover,
        "hand_back": on_hand_back,
        "close": on_close,
        "message": on_message,
        "typing": on_typing,
        "read": on_read,
        "assign": on_assign,
    }
