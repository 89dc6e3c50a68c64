"""A minimal chat client for the live system: an HTTP visit for the session, then the socket.

Used by the end-to-end tests and by bench/chat_latency.py.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import websockets


def visit(base_url: str) -> str:
    """GET the chat page like a browser would; returns the Cookie header of the new session."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(base_url + "/").read()
    return "; ".join(f"{cookie.name}={cookie.value}" for cookie in jar)


@dataclass
class Exchange:
    """One question and its streamed answer, with when each frame arrived."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    sent_at: float = 0.0
    first_delta_at: float | None = None
    done_at: float | None = None

    @property
    def done(self) -> dict[str, Any]:
        return self.frames[-1]

    @property
    def deltas(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == "delta"]


class ChatClient:
    def __init__(self, base_url: str, cookie: str | None = None) -> None:
        self.base_url = base_url
        self.cookie = cookie or visit(base_url)
        self.socket: Any = None
        self.history: dict[str, Any] = {}

    async def __aenter__(self) -> ChatClient:
        url = self.base_url.replace("http", "ws", 1) + "/ws/chat/"
        headers = {"Cookie": self.cookie, "Origin": self.base_url}
        self.socket = await websockets.connect(url, additional_headers=headers, max_size=2**22)
        self.history = await self.receive()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.socket.close()

    async def receive(self, timeout: float = 120) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.socket.recv(), timeout))

    async def send(self, frame: dict[str, Any]) -> None:
        await self.socket.send(json.dumps(frame))

    async def ask(self, text: str, *, timeout: float = 180, until: str = "done") -> Exchange:
        exchange = Exchange(sent_at=time.perf_counter())
        await self.send({"type": "message", "text": text, "client_id": f"c-{time.time_ns()}"})
        return await self.collect(exchange, timeout=timeout, until=until)

    async def collect(self, exchange: Exchange, *, timeout: float = 180, until: str = "done") -> Exchange:
        deadline = time.perf_counter() + timeout
        while True:
            frame = await self.receive(timeout=max(deadline - time.perf_counter(), 0.01))
            exchange.frames.append(frame)
            if frame["type"] == "delta" and exchange.first_delta_at is None:
                exchange.first_delta_at = time.perf_counter()
            if frame["type"] == "error":
                raise AssertionError(f"the server refused: {frame}")
            if frame["type"] == until:
                if until == "done":
                    exchange.done_at = time.perf_counter()
                return exchange
