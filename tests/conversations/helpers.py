"""Helpers for talking to the real ASGI application over a websocket in tests."""

from __future__ import annotations

import asyncio
from typing import Any

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.db import SessionStore

from chatbot.asgi import application

ORIGIN = b"http://127.0.0.1:8000"


@database_sync_to_async
def session_for(customer: Any) -> str:
    session = SessionStore()
    session["customer_id"] = str(customer.id)
    session.create()
    return session.session_key or ""


async def chat_socket(customer: Any = None, *, query: str = "", origin: bytes = ORIGIN) -> WebsocketCommunicator:
    headers = [(b"origin", origin), (b"host", b"127.0.0.1:8000")]
    if customer is not None:
        headers.append((b"cookie", f"sessionid={await session_for(customer)}".encode()))
    return WebsocketCommunicator(application, "/ws/chat/" + (f"?{query}" if query else ""), headers=headers)


async def receive_until(socket: WebsocketCommunicator, frame_type: str, timeout: float = 10) -> list[dict[str, Any]]:
    """Every frame up to and including the first of ``frame_type``."""
    frames: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while not frames or frames[-1]["type"] != frame_type:
        remaining = deadline - asyncio.get_running_loop().time()
        frames.append(await socket.receive_json_from(timeout=max(remaining, 0.01)))
    return frames
