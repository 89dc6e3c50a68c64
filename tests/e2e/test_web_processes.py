"""Two web processes behind one port (uvicorn ``--workers 2``, chatbot/web.py), a scripted worker
(no model): which process holds a socket makes no difference, since every frame goes through the
Redis channel layer and every session lives in the database.

Which process serves a connection is read from the operating system (psutil: the worker process
that holds the TCP connection from the client's port), never from the application. To land a
connection on a chosen process, the other one is suspended (SIGSTOP) while it connects, so that
only the chosen one can accept; a second at most, well inside uvicorn's 5 s health check.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest
import websockets
from django.conf import settings

from tests.e2e.client import ChatClient
from tests.e2e.live import LiveSystem, connection_holder

pytestmark = pytest.mark.django_db(transaction=True)

REPLY = "Your parcel left the depot this morning and should reach you by Friday afternoon."
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def system(django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveSystem]:
    prefix = f"{settings.REDIS_KEY_PREFIX}:webprocs"
    system = LiveSystem(fake=True, prefix=prefix, env={"TRUSTED_PROXY_HOPS": "0"}, web_processes=2)
    system.stop_worker()
    system.start_scripted_worker({}, default_reply=REPLY, step_delay_s=0.05)
    system.wait_for_worker()
    deadline = time.monotonic() + 30
    while len(system.web_workers()) < 2:  # the supervisor starts its processes after it answers
        assert time.monotonic() < deadline, "uvicorn did not start two web processes"
        time.sleep(0.1)
    yield system
    system.stop()


@pytest.fixture
def processes(system: LiveSystem) -> tuple[psutil.Process, psutil.Process]:
    workers = system.web_workers()
    assert len(workers) == 2 and system.web.pid not in {w.pid for w in workers}, workers
    return workers[0], workers[1]


@contextlib.contextmanager
def only(chosen: psutil.Process, system: LiveSystem) -> Iterator[None]:
    """While inside, only ``chosen`` of the web processes can accept a connection."""
    others = [process for process in system.web_workers() if process.pid != chosen.pid]
    for process in others:
        process.suspend()
    try:
        yield
    finally:
        for process in others:
            process.resume()


def page_on(system: LiveSystem, process: psutil.Process, headers: dict[str, str] | None = None) -> str:
    """GET the chat page from ``process`` (checked) as a new visitor; the session cookie it set."""
    connection = http.client.HTTPConnection("127.0.0.1", system.port, timeout=TIMEOUT_S)
    try:
        with only(process, system):
            connection.request("GET", "/", headers=headers or {})
            response = connection.getresponse()
            response.read()
        assert response.status == 200
        client_port = connection.sock.getsockname()[1]  # still open: HTTP/1.1 keeps it alive
        assert connection_holder([process], system.port, client_port) == process
    finally:
        connection.close()
    cookies = [header.split(";", 1)[0] for header in response.headers.get_all("Set-Cookie") or []]
    return "; ".join(cookies)


def holder(system: LiveSystem, socket: Any) -> psutil.Process:
    return connection_holder(system.web_workers(), system.port, socket.local_address[1])


async def customer_on(system: LiveSystem, process: psutil.Process, cookie: str) -> ChatClient:
    chat = ChatClient(system.url, cookie=cookie)
    with only(process, system):
        await chat.__aenter__()  # connected, its history received
    assert holder(system, chat.socket) == process
    return chat


async def agent_on(system: LiveSystem, process: psutil.Process, session_key: str) -> Any:
    headers = {"Cookie": f"sessionid={session_key}", "Origin": system.url}
    with only(process, system):
        socket = await websockets.connect(
            system.url.replace("http", "ws", 1) + "/ws/agent/", additional_headers=headers
        )
        hello = json.loads(await asyncio.wait_for(socket.recv(), TIMEOUT_S))
    assert hello["type"] == "hello", hello
    assert holder(system, socket) == process
    return socket


async def until(socket: Any, match: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Frames from ``socket`` up to and including the first that ``match`` accepts."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + TIMEOUT_S
    while not frames or not match(frames[-1]):
        remaining = max(deadline - time.monotonic(), 0.01)
        frames.append(json.loads(await asyncio.wait_for(socket.recv(), remaining)))
    return frames


def agent_session() -> str:
    from django.contrib.auth.models import Group, User
    from django.test import Client

    user = User.objects.create_user("dana-webprocs", password="a-long-agent-password", first_name="Dana")
    user.groups.add(Group.objects.get_or_create(name="agents")[0])
    client = Client()
    client.force_login(user)
    return str(client.cookies["sessionid"].value)


def session_customer(cookie: str) -> str:
    from django.contrib.sessions.backends.db import SessionStore

    key = dict(part.split("=", 1) for part in cookie.split("; "))["sessionid"]
    return str(SessionStore(session_key=key)["customer_id"])


def conversation_customer(conversation_id: str) -> str:
    from conversations.models import Conversation

    return str(Conversation.objects.get(id=conversation_id).customer_id)


def test_a_customer_and_an_agent_on_different_processes_chat_live_through_both(
    system: LiveSystem, processes: tuple[psutil.Process, psutil.Process]
) -> None:
    first, second = processes
    cookie = page_on(system, first)  # the page from one process, its socket on the other
    key = agent_session()
    page_customer = session_customer(cookie)

    async def scenario() -> None:
        customer = await customer_on(system, second, cookie)
        agent = await agent_on(system, first, key)
        try:
            conversation_id = customer.history["conversation"]["id"]
            # The socket found the customer the other process's page made: the session is in the database.
            assert await asyncio.to_thread(conversation_customer, conversation_id) == page_customer
            await agent.send(json.dumps({"type": "watch", "conversation_id": conversation_id}))
            await until(agent, lambda f: f["type"] == "history" and f.get("conversation_id") == conversation_id)

            # The customer asks (process two); the reply streams to them, and live to the agent (process one).
            exchange = await customer.ask("Where is my parcel?", timeout=TIMEOUT_S)
            assert exchange.deltas and exchange.done["status"] == "complete"
            assert exchange.done["text"] == REPLY
            seen = await until(agent, lambda f: f["type"] == "done" and f.get("conversation_id") == conversation_id)
            assert any(f["type"] == "delta" and f.get("conversation_id") == conversation_id for f in seen), seen
            assert any(
                f["type"] == "message"
                and f["message"]["role"] == "customer"
                and f["message"]["text"] == "Where is my parcel?"
                for f in seen
            ), seen
            assert seen[-1]["text"] == REPLY

            # The agent takes over and answers (process one); the customer hears it on process two.
            await agent.send(json.dumps({"type": "takeover", "conversation_id": conversation_id}))
            frames = await until(
                customer.socket, lambda f: f["type"] == "status" and f["conversation"]["status"] == "agent"
            )
            if not any(f["type"] == "message" and f["message"]["role"] == "system" for f in frames):
                frames += await until(customer.socket, lambda f: f["type"] == "message")
            joined = [
                f["message"]["text"] for f in frames if f["type"] == "message" and f["message"]["role"] == "system"
            ]
            assert joined == ["Dana joined the conversation."], frames
            text = "Hello, this is Dana: I have your order in front of me."
            await agent.send(json.dumps({"type": "message", "conversation_id": conversation_id, "text": text}))
            frames = await until(customer.socket, lambda f: f["type"] == "message" and f["message"]["role"] == "agent")
            assert frames[-1]["message"]["text"] == text

            # And the customer's answer reaches the agent, with no bot reply in between.
            await customer.send({"type": "message", "text": "Thank you!", "client_id": "c-thanks"})
            seen = await until(agent, lambda f: f["type"] == "message" and f["message"]["text"] == "Thank you!")
            assert not any(f["type"] == "message" and f["message"]["role"] == "bot" for f in seen), seen
            assert holder(system, customer.socket) == second and holder(system, agent) == first
        finally:
            await customer.__aexit__(None, None, None)
            await agent.close()

    asyncio.run(scenario())


def test_two_customers_on_different_processes_each_get_their_own_replies(
    system: LiveSystem, processes: tuple[psutil.Process, psutil.Process]
) -> None:
    first, second = processes

    async def scenario() -> None:
        one = await customer_on(system, first, page_on(system, second))
        two = await customer_on(system, second, page_on(system, first))
        try:
            answers = await asyncio.gather(one.ask("First?", timeout=TIMEOUT_S), two.ask("Second?", timeout=TIMEOUT_S))
            assert one.history["conversation"]["id"] != two.history["conversation"]["id"]
            for exchange, asked in zip(answers, ("First?", "Second?"), strict=True):
                assert exchange.done["text"] == REPLY and exchange.deltas
                messages = [f["message"] for f in exchange.frames if f["type"] == "message"]
                assert [m["text"] for m in messages if m["role"] == "customer"] == [asked]  # its own, only
                replies = {m["id"] for m in messages if m["role"] == "bot"}
                assert {f["message_id"] for f in exchange.frames if f["type"] in ("delta", "done")} <= replies
        finally:
            await one.__aexit__(None, None, None)
            await two.__aexit__(None, None, None)

    asyncio.run(scenario())


def test_the_server_does_not_take_the_client_address_from_x_forwarded_for(
    system: LiveSystem, processes: tuple[psutil.Process, psutil.Process]
) -> None:
    # TRUSTED_PROXY_HOPS is 0 here: no proxy is trusted, so a client's own X-Forwarded-For must not
    # become its address. uvicorn would rewrite it from 127.0.0.1 unless told not to (--no-proxy-headers).
    from conversations.models import Customer

    for process in processes:
        cookie = page_on(system, process, headers={"X-Forwarded-For": "203.0.113.9"})
        assert Customer.objects.get(id=session_customer(cookie)).address == "127.0.0.1"
