"""What a customer message costs the web process (issue 16, docs/web-tier.md): the statements
``message_send`` makes, the inbox rows read in batches by the announcer, and the outbox that sends a
socket's frames from the event loop after its database call, over the real application and the
real Redis channel layer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations import events, selectors
from conversations.chat import services as chat_services
from conversations.models import Conversation, Customer, Feedback, Message
from conversations.workspace import services as workspace_services
from tests.sockets import open_agent, open_chat, receive_until

pytestmark = pytest.mark.django_db(transaction=True)


def writes_of(queries: list[dict[str, Any]]) -> list[str]:
    skip = ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE", "ROLLBACK")
    return [q["sql"] for q in queries if not q["sql"].upper().startswith(skip)]


def test_a_message_the_bot_answers_costs_seven_statements_or_fewer(customer: Customer) -> None:
    conversation = Conversation.objects.create(customer=customer)
    chat_services.message_send(conversation=conversation, text="first", client_id="a")
    Message.objects.filter(role=Message.Role.BOT).update(status=Message.Status.COMPLETE)
    with CaptureQueriesContext(connection) as captured:
        with events.outbox_collect() as outbox:  # as a socket sends them: after, from its loop
            result = chat_services.message_send(conversation=conversation, text="Where is my order?", client_id="b")
    statements = writes_of(captured.captured_queries)
    # lock (PostgreSQL only), conversation, one read of what it decides on, the two messages, the
    # version that answers, the conversation's times: no inbox row, no second status read.
    assert len(statements) <= 7, "\n".join(statements)
    assert result.created and result.bot_message is not None
    assert [e.payload["type"] for e in outbox] == ["message", events.INBOX_TOUCHED, "message", "notice"]


def test_one_read_still_decides_resend_in_flight_closed_and_the_limit(customer: Customer, settings: Any) -> None:
    conversation = Conversation.objects.create(customer=customer)
    first = chat_services.message_send(conversation=conversation, text="one", client_id="same")
    again = chat_services.message_send(conversation=conversation, text="one", client_id="same")
    assert not again.created and again.customer_message.id == first.customer_message.id
    with pytest.raises(chat_services.ChatError) as busy:
        chat_services.message_send(conversation=conversation, text="two", client_id="other")
    assert busy.value.code == "reply_in_progress"
    Message.objects.filter(role=Message.Role.BOT).update(status=Message.Status.FAILED)
    settings.CHAT_RATE_LIMIT_MESSAGES = 2
    chat_services.reply_retry(conversation=conversation)  # the retry counts as a message
    Message.objects.filter(role=Message.Role.BOT).update(status=Message.Status.FAILED)
    with pytest.raises(chat_services.ChatError) as limited:
        chat_services.message_send(conversation=conversation, text="three", client_id="third")
    assert limited.value.code == "rate_limited"
    settings.CHAT_RATE_LIMIT_MESSAGES = 3  # one message and one retry so far: a third fits
    assert chat_services.message_send(conversation=conversation, text="three", client_id="third").created
    Conversation.objects.filter(id=conversation.id).update(status=Conversation.Status.CLOSED)
    with pytest.raises(chat_services.ChatError) as closed:
        chat_services.message_send(conversation=conversation, text="four", client_id="fourth")
    assert closed.value.code == "conversation_closed"
    assert chat_services.message_send(conversation=conversation, text="three", client_id="third").created is False


def test_the_batched_inbox_rows_are_the_rows_one_by_one(customer: Customer, agent_user: Any) -> None:
    quiet = Conversation.objects.create(customer=customer)  # no message yet
    busy = Conversation.objects.create(customer=Customer.objects.create(display_name="Bob"))
    result = chat_services.message_send(conversation=busy, text="My parcel is late", client_id="x")
    Message.objects.filter(id=result.bot_message.id).update(text="Sorry!", status=Message.Status.COMPLETE)
    Message.objects.create(conversation=busy, role=Message.Role.SYSTEM, text="Dana joined the conversation.")
    Feedback.objects.create(message=result.bot_message, source=Feedback.Source.CUSTOMER, positive=False)
    workspace_services.conversation_assign(conversation=busy, assignee=agent_user, actor=agent_user)
    ids = [str(quiet.id), str(busy.id), "00000000-0000-0000-0000-000000000000"]  # the last one: erased
    with CaptureQueriesContext(connection) as captured:
        batched = {row["id"]: row for row in selectors.inbox_items(ids)}
    assert len(captured.captured_queries) <= 4
    assert set(batched) == {str(quiet.id), str(busy.id)}
    for conversation in (quiet, busy):
        one = selectors.inbox_item(selectors.conversation_fresh(conversation.id))
        assert batched[str(conversation.id)] == one
    assert batched[str(busy.id)]["has_negative"] and batched[str(busy.id)]["message_count"] == 2


async def test_the_inbox_hears_each_conversation_once_a_round_read_in_one_batch(
    customer: Customer, agent_user: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.INBOX_COALESCE_MS = 300
    reads: list[list[str]] = []
    read_rows = selectors.inbox_items

    def counted(ids: list[str]) -> list[dict[str, Any]]:
        reads.append(list(ids))
        return read_rows(ids)

    monkeypatch.setattr(selectors, "inbox_items", counted)
    agent = await open_agent(agent_user)
    customers = [customer, *[await database_sync_to_async(Customer.objects.create)() for _ in range(3)]]
    chats = [await open_chat(c) for c in customers]
    for n, (chat, _history) in enumerate(chats):
        await chat.send_json_to({"type": "message", "text": f"question {n}", "client_id": f"q{n}"})
    for chat, _history in chats:
        await receive_until(chat, lambda f: f["type"] == "message" and f["message"]["role"] == "bot")
    rows: dict[str, dict[str, Any]] = {}
    while len(rows) < len(chats):
        frame = await agent.receive_json_from(timeout=5)
        if frame["type"] == "inbox":
            assert frame["conversation"]["id"] not in rows, "one row a conversation a round"
            rows[frame["conversation"]["id"]] = frame["conversation"]
    assert {h["conversation"]["id"] for _, h in chats} == set(rows)
    assert all(row["customer_message_count"] == 1 and row["last_text"].startswith("question") for row in rows.values())
    assert len(reads) == 1 and len(reads[0]) == len(chats), reads  # all four rows in one read
    await asyncio.sleep(0.5)
    assert await agent.receive_nothing(timeout=0.3)
    for chat, _ in chats:
        await chat.disconnect()
    await agent.disconnect()


async def test_a_socket_write_commits_even_when_its_frames_cannot_be_sent(
    customer: Customer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    chat, history = await open_chat(customer)

    async def refused(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Redis refused")

    monkeypatch.setattr(events.channel_layer(), "group_send", refused)
    await chat.send_json_to({"type": "message", "text": "Still stored?", "client_id": "kept"})
    await asyncio.sleep(0.5)
    stored = await database_sync_to_async(
        lambda: list(Message.objects.filter(conversation_id=history["conversation"]["id"]).values_list("role", "text"))
    )()
    assert ("customer", "Still stored?") in stored and any(role == "bot" for role, _ in stored)
    assert "could not send" in caplog.text
    await chat.disconnect()


async def test_a_socket_write_sends_its_frames_after_its_call_in_order(customer: Customer) -> None:
    conversation = await database_sync_to_async(Conversation.objects.create)(customer=customer)
    order: list[str] = []

    def write() -> str:
        chat_services.message_send(conversation=conversation, text="hello", client_id="o1")
        order.append("returned")
        return "ok"

    sent: list[str] = []
    real = events._send_all

    async def recorded(batch: Any, **kwargs: Any) -> None:
        order.append("sent")
        sent.extend(e.payload["type"] for e in batch)
        await real(batch, **kwargs)

    events._send_all = recorded  # type: ignore[assignment]
    try:
        assert await events.in_database(write)() == "ok"
    finally:
        events._send_all = real  # type: ignore[assignment]
    assert order == ["returned", "sent"]
    assert sent[0] == "message" and sent[-1] == "notice"


async def test_a_burst_of_frames_for_one_process_is_all_delivered() -> None:
    """channels-redis queues all of a process's sockets' frames under one key, and a group send to
    a full key drops the frame: a burst of replies must fit (CHANNEL_CAPACITY), and so many sends at
    once must find Redis connections (CHANNEL_REDIS_MAX_CONNECTIONS)."""
    layer = events.channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("burst", channel)
    count = 600
    await asyncio.gather(
        *(layer.group_send("burst", {"type": events.EVENT_HANDLER, "payload": {"n": n}}) for n in range(count))
    )
    received = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(count)]
    assert sorted(m["payload"]["n"] for m in received) == list(range(count))
    await layer.group_discard("burst", channel)


async def test_a_customer_message_is_one_group_send_its_frames_in_order(
    customer: Customer, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat, history = await open_chat(customer)
    layer = events.channel_layer()
    real = layer.group_send
    sends: list[tuple[str, list[str]]] = []

    async def recorded(group: str, message: dict[str, Any]) -> None:
        sends.append((group, [p["type"] for p in events.payloads_of(message)]))
        await real(group, message)

    monkeypatch.setattr(layer, "group_send", recorded)
    await chat.send_json_to({"type": "message", "text": "Where is my order?", "client_id": "one"})
    frames = await receive_until(chat, "notice")  # no worker runs here: the notice says so
    group = events.group_name(history["conversation"]["id"])
    assert sends == [(group, ["message", "message", "notice"])]
    assert [(f["type"], f.get("message", {}).get("role")) for f in frames] == [
        ("message", "customer"),
        ("message", "bot"),
        ("notice", None),
    ]
    await chat.disconnect()


def test_a_reply_still_being_written_is_not_the_rows_last_text(customer: Customer) -> None:
    """The announcer reads a row a moment after the customer's message, when the worker may have
    saved half of the reply: the row shows the customer's words until the reply is finished."""
    conversation = Conversation.objects.create(customer=customer)
    reply = chat_services.message_send(conversation=conversation, text="Where is my parcel?", client_id="p").bot_message
    Message.objects.filter(id=reply.id).update(status=Message.Status.STREAMING, text="Your parcel")
    for row in (selectors.inbox_items([conversation.id])[0], selectors.inbox_item(conversation)):
        assert row["last_text"] == "Where is my parcel?"
    Message.objects.filter(id=reply.id).update(status=Message.Status.COMPLETE, text="Your parcel leaves today.")
    assert selectors.inbox_items([conversation.id])[0]["last_text"] == "Your parcel leaves today."
