"""Sockets over the real ASGI application (session cookies, origin) and the real Redis layer,
for every test that opens one."""

from __future__ import annotations

import asyncio
from typing import Any

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client

from chatbot.asgi import application

ORIGIN = b"http://127.0.0.1:8000"
HEADERS = [(b"origin", ORIGIN), (b"host", b"127.0.0.1:8000")]


@database_sync_to_async
def customer_session(customer: Any) -> str:
    session = SessionStore()
    session["customer_id"] = str(customer.id)
    session.create()
    return session.session_key or ""


@database_sync_to_async
def user_session(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def socket_for(
    path: str, *, customer: Any = None, user: Any = None, query: str = "", origin: bytes = ORIGIN
) -> WebsocketCommunicator:
    headers = [(b"origin", origin), (b"host", b"127.0.0.1:8000")]
    if customer is not None:
        headers.append((b"cookie", f"sessionid={await customer_session(customer)}".encode()))
    elif user is not None:
        headers.append((b"cookie", f"sessionid={await user_session(user)}".encode()))
    return WebsocketCommunicator(application, path + (f"?{query}" if query else ""), headers=headers)


async def chat_socket(customer: Any = None, *, query: str = "", origin: bytes = ORIGIN) -> WebsocketCommunicator:
    """A customer's chat socket, not yet connected."""
    return await socket_for("/ws/chat/", customer=customer, query=query, origin=origin)


async def open_chat(customer: Any, query: str = "") -> tuple[WebsocketCommunicator, dict[str, Any]]:
    """A customer's chat socket, connected, and the history frame it opened with."""
    socket = await chat_socket(customer, query=query)
    connected, code = await socket.connect()
    assert connected, code
    history = await socket.receive_json_from(timeout=5)
    assert history["type"] == "history"
    return socket, history


async def open_agent(user: Any) -> WebsocketCommunicator:
    socket = await socket_for("/ws/agent/", user=user)
    connected, code = await socket.connect()
    assert connected, code
    hello = await socket.receive_json_from(timeout=5)
    assert hello["type"] == "hello"
    return socket


async def receive_until(socket: WebsocketCommunicator, match: Any, timeout: float = 10) -> list[dict[str, Any]]:
    """Frames up to and including the first for which ``match(frame)`` is true (or of type ``match``)."""
    test = match if callable(match) else (lambda frame: frame["type"] == match)
    frames: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while not frames or not test(frames[-1]):
        remaining = deadline - asyncio.get_running_loop().time()
        frames.append(await socket.receive_json_from(timeout=max(remaining, 0.01)))
    return frames
