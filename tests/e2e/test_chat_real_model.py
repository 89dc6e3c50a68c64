"""The customer chat end to end: browser protocol → uvicorn → Redis → real SmolLM2 worker → database."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conversations.models import Message

from .checks import streamed_and_stored
from .client import ChatClient

pytestmark = [pytest.mark.model, pytest.mark.django_db(transaction=True)]


async def test_a_question_gets_a_streamed_reply_from_the_real_model_and_it_is_stored(live_system: Any) -> None:
    async with ChatClient(live_system.url) as chat:
        exchange = await chat.ask("Hello! What can you help me with?")
    reply = await streamed_and_stored(exchange)
    assert reply.model_name.startswith("SmolLM2")
    assert reply.created_at < reply.first_token_at <= reply.finished_at


async def test_a_worker_killed_mid_reply_leaves_no_reply_streaming_forever(live_system: Any) -> None:
    async with ChatClient(live_system.url) as chat:
        first_delta = await chat.ask("Tell me a long story about a brave little dragon.", until="delta")
        reply_id = first_delta.deltas[0]["message_id"]
        live_system.kill_worker()
        assert (await asyncio.to_thread(Message.objects.get, id=reply_id)).status == "streaming"
        live_system.start_worker()
        exchange = await chat.collect(first_delta, timeout=240)
    restarted = [f for f in exchange.frames if f["type"] == "message" and f["message"]["id"] == reply_id]
    assert restarted and restarted[-1]["message"]["text"] == "", "the browser was not told to drop the partial text"
    assert exchange.done["message_id"] == reply_id and exchange.done["status"] == "complete"
    reply = await asyncio.to_thread(Message.objects.get, id=reply_id)
    assert reply.status == "complete" and reply.text == exchange.done["text"]
    await asyncio.to_thread(live_system.wait_for_worker)
