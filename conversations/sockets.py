"""What every socket shares: the close codes, reading a frame, sending one, and the role check
that signed-in users' sockets (the agents', the training run's) repeat while they are open."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from . import roles
from .errors import ChatError

T = TypeVar("T")

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY_SOCKETS = 4409
CLOSE_RATE_LIMITED = 4429


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


def handler_for(handlers: dict[str, T], frame: dict[str, Any]) -> T:
    handler = handlers.get(frame["type"])
    if handler is None:
        raise ChatError("unknown_type", f"Unknown frame type {frame['type']!r}.")
    return handler


def error_frame(error: ChatError) -> dict[str, Any]:
    return {"type": "error", "code": error.code, "detail": error.detail}


async def limited(check: Callable[..., T], **kwargs: Any) -> T:
    """A limit's Redis round trip, off the event loop (and off the thread the database calls use)."""
    return await sync_to_async(check, thread_sensitive=False)(**kwargs)


class JsonSocket(AsyncWebsocketConsumer):
    async def send_json(self, payload: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(payload))


class RoleCheckedConsumer(JsonSocket):
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
