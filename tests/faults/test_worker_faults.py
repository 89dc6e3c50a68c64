"""The inference worker under faults caused for real: the worker killed -9 mid-reply (again and
again), Redis restarted empty mid-reply, the database unavailable for 30 s, a bad adapter promoted.
uvicorn and the scripted fake worker run as processes (tests/e2e/live.py), each test's system on a
Redis prefix of its own. After each fault: no customer message is lost, no reply stays pending or
streaming past a stated bound, and the bot answers again within a stated bound."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from conversations.events import REPLY_FAILED_TEXT
from conversations.models import Message
from tests.e2e.client import ChatClient
from tests.e2e.live import LiveSystem

from .tools import DatabaseOutage, RedisServer

pytestmark = [pytest.mark.django_db(transaction=True)]

LONG_PROMPT = "Tell me everything, please."
LONG_REPLY = " ".join(f"part{i:03d}" for i in range(60))  # 3 s at one word every 50 ms
QUICK_REPLY = "Yes, I am here."
SETTLE_S = 60  # a reply cut off by a fault is finished (or failed) within this after the fault ends
ANSWER_S = 60  # the bot answers a new question within this after the fault ends


def start(env: dict[str, str] | None = None) -> LiveSystem:
    system = LiveSystem(fake=True, prefix=f"faults-{uuid.uuid4().hex[:8]}", env=env)
    system.stop_worker()
    system.start_scripted_worker({LONG_PROMPT: LONG_REPLY}, default_reply=QUICK_REPLY)
    system.wait_for_worker()
    return system


@pytest.fixture
def system(django_db_setup: Any) -> Iterator[LiveSystem]:
    running = start()
    yield running
    running.stop()


def settled(within_s: float) -> list[Message]:
    """Every bot reply once none is pending or streaming; fails after ``within_s``."""
    deadline = time.monotonic() + within_s
    while Message.objects.filter(role="bot", status__in=Message.ACTIVE_STATUSES).exists():
        assert time.monotonic() < deadline, "a reply is still pending or streaming"
        time.sleep(0.2)
    return list(Message.objects.filter(role="bot"))


def assert_nothing_lost(questions: list[str]) -> None:
    assert sorted(Message.objects.filter(role="customer").values_list("text", flat=True)) == sorted(questions)


async def first_delta(client: ChatClient, text: str) -> None:
    await client.ask(text, until="delta", timeout=60)


def assert_answers(system: LiveSystem, text: str = "are you there?") -> None:
    """A new customer's question is answered within ANSWER_S, and the worker says it is online."""

    async def ask() -> dict[str, Any]:
        deadline = time.monotonic() + ANSWER_S
        while True:  # as a browser does, it connects again while the web side gets Redis back
            try:
                async with ChatClient(system.url) as client:
                    return (await client.ask(text, timeout=ANSWER_S)).done
            except (OSError, websockets.ConnectionClosed):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    done = asyncio.run(ask())
    assert done["status"] == "complete" and done["text"] == QUICK_REPLY
    assert system.worker_online()


def test_it_finishes_a_reply_whose_worker_is_killed_again_and_again(system: LiveSystem) -> None:
    async def chat() -> dict[str, Any]:
        async with ChatClient(system.url) as client:
            await first_delta(client, LONG_PROMPT)
            for _ in range(3):
                system.kill_worker()
                system.start_scripted_worker({LONG_PROMPT: LONG_REPLY}, default_reply=QUICK_REPLY)
                while (await client.receive(timeout=SETTLE_S))["type"] != "delta":
                    pass  # the restarted worker claims the reply and streams it again
            return (await client.collect(client_exchange(), timeout=SETTLE_S)).done

    done = asyncio.run(chat())
    assert done["status"] == "complete" and done["text"] == LONG_REPLY
    (reply,) = settled(SETTLE_S)
    assert reply.status == "complete" and reply.text == LONG_REPLY and reply.claimed_by
    assert_nothing_lost([LONG_PROMPT])
    assert_answers(system)


def client_exchange() -> Any:
    from tests.e2e.client import Exchange

    return Exchange()


def test_it_finishes_a_reply_when_redis_restarts_empty_under_it(django_db_setup: Any) -> None:
    redis_server = RedisServer()
    system = start({"REDIS_URL": redis_server.url})
    try:

        async def ask_then_restart_redis() -> None:
            client = await ChatClient(system.url).__aenter__()
            await first_delta(client, LONG_PROMPT)
            redis_server.restart()
            with contextlib.suppress(websockets.ConnectionClosed):  # the web side drops the socket
                await client.__aexit__()

        asyncio.run(ask_then_restart_redis())
        (reply,) = settled(SETTLE_S)
        assert reply.status == "complete" and reply.text == LONG_REPLY  # the database stayed the truth
        assert system.worker.poll() is None
        system.wait_for_worker(timeout=ANSWER_S)
        assert_answers(system)
        assert_nothing_lost([LONG_PROMPT, "are you there?"])
    finally:
        system.stop()
        redis_server.stop()


def test_it_finishes_a_reply_when_the_database_is_unavailable_for_30_s(django_db_setup: Any) -> None:
    outage = DatabaseOutage()
    system = start(outage.env)
    try:

        async def ask_then_cut() -> None:
            async with ChatClient(system.url) as client:
                await first_delta(client, LONG_PROMPT)
                await asyncio.to_thread(outage.during, 30)

        asyncio.run(ask_then_cut())
        (reply,) = settled(SETTLE_S)
        assert reply.status == "complete" and reply.text == LONG_REPLY
        assert system.worker.poll() is None, "the worker gave up on a 30 s outage"
        assert_answers(system)
        assert_nothing_lost([LONG_PROMPT, "are you there?"])
    finally:
        system.stop()
        outage.close()


def test_a_bad_adapter_promoted_fails_only_its_replies(system: LiveSystem, tmp_path: Path) -> None:
    from finetuning.models import ModelVersion

    (tmp_path / "v-bad").mkdir()  # no adapter_config.json: no engine can load it
    bad = ModelVersion.objects.create(
        name="v-bad", base_model="x", adapter_path=str(tmp_path / "v-bad"), status="active"
    )

    async def ask() -> dict[str, Any]:
        async with ChatClient(system.url) as client:
            return (await client.ask("hello", timeout=ANSWER_S)).done

    done = asyncio.run(ask())
    assert done["status"] == "failed" and done["error"] == REPLY_FAILED_TEXT
    stored = Message.objects.get(id=done["message_id"]).error  # the reason is for the agents, with no paths
    assert "v-bad" in stored and str(tmp_path) not in stored
    bad.refresh_from_db()
    assert "adapter_config.json" in bad.serve_error
    # Still active, but marked: the next customers are answered by the base model, not failed.
    assert_answers(system)
    answered = Message.objects.filter(role="bot", status="complete").latest("id")
    assert answered.model_version_id is None
    assert system.worker.poll() is None
    settled(SETTLE_S)
    assert_nothing_lost(["hello", "are you there?"])
