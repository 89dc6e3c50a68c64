"""Typing indicators both ways: the customer's typing reaches the agents watching (only while a
person holds or is asked for the conversation), the holder's typing reaches the customer, and
neither side can flood the other."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async

from conversations import events
from conversations.chat import services as chat_services
from conversations.models import Conversation
from conversations.workspace import services as workspace_services
from tests.capture import CaptureEvents
from tests.sockets import open_agent, open_chat, receive_until

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clean_redis")]


def test_the_throttle_lets_one_frame_a_second_through() -> None:
    throttle = chat_services.TypingThrottle()
    assert [throttle.allow(t) for t in (10.0, 10.2, 10.9, 11.0, 11.5, 12.1)] == [True, False, False, True, False, True]


def test_the_customers_typing_reaches_the_agents_only_while_a_person_is_involved(
    conversation: Conversation, capture_events: CaptureEvents
) -> None:
    with capture_events() as sent:
        assert not chat_services.customer_typing_send(conversation=conversation)  # the bot holds it
    assert sent.events == []
    chat_services.handoff_request(conversation=conversation)
    with capture_events() as sent:
        assert chat_services.customer_typing_send(conversation=conversation)  # the customer fixture is Alice
    assert sent.to_conversation() == [{"type": "typing", "who": "customer", "name": "Alice"}]
    assert events.for_customer(sent.to_conversation()[0]) is None  # never back to the customer


def test_only_the_holder_types_to_the_customer(
    conversation: Conversation, agent_user: Any, second_agent: Any, capture_events: CaptureEvents
) -> None:
    with capture_events() as sent:
        assert not workspace_services.agent_typing_send(conversation=conversation, agent=agent_user)
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    with capture_events() as sent:
        assert not workspace_services.agent_typing_send(conversation=conversation, agent=second_agent)
        assert workspace_services.agent_typing_send(conversation=conversation, agent=agent_user)
    assert sent.to_conversation() == [{"type": "typing", "who": "agent", "name": "Dana"}]
    assert events.for_customer(sent.to_conversation()[0]) == {"type": "typing", "who": "agent", "name": "Dana"}


@pytest.mark.django_db(transaction=True)
async def test_typing_goes_both_ways_over_the_sockets_and_a_flood_is_ignored(customer: Any, agent_user: Any) -> None:
    chat, history = await open_chat(customer)
    conversation_id = history["conversation"]["id"]
    agent = await open_agent(agent_user)
    await agent.send_json_to({"type": "watch", "conversation_id": conversation_id})
    await receive_until(agent, "history")

    await chat.send_json_to({"type": "typing"})  # with the bot: nobody waits for it
    await chat.send_json_to({"type": "handoff"})
    await receive_until(chat, "status")
    await receive_until(agent, "status")
    assert not any(f["type"] == "typing" for f in await drain(agent))

    await asyncio.sleep(chat_services.TYPING_MIN_INTERVAL_S)  # the throttle counted the first frame too
    for _ in range(20):  # a flood: one gets through, the rest are dropped within the second
        await chat.send_json_to({"type": "typing"})
    typed = [f for f in await drain(agent, wait=0.5) if f["type"] == "typing"]
    assert typed == [{"type": "typing", "who": "customer", "name": "Alice", "conversation_id": conversation_id}]
    assert all(f["type"] != "typing" for f in await drain(chat, wait=0.2))  # not echoed to the customer

    await agent.send_json_to({"type": "takeover", "conversation_id": conversation_id})
    await receive_until(chat, "status")
    await agent.send_json_to({"type": "typing", "conversation_id": conversation_id})
    frames = await receive_until(chat, "typing")
    assert frames[-1] == {"type": "typing", "who": "agent", "name": "Dana"}
    await chat.disconnect()
    await agent.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_typing_frame_is_not_an_unknown_type(customer: Any) -> None:
    chat, _ = await open_chat(customer)
    await chat.send_json_to({"type": "typing"})
    assert await chat.receive_nothing(timeout=0.3)  # no error frame: silently nothing while with the bot
    await chat.disconnect()
    conversation = await database_sync_to_async(Conversation.objects.get)(customer=customer)
    assert conversation.status == Conversation.Status.BOT


async def drain(socket: Any, wait: float = 0.3) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while not await socket.receive_nothing(timeout=wait):
        frames.append(await socket.receive_json_from())
    return frames
