"""The customer socket over the real application and the real Redis channel layer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.test import override_settings

from conversations.models import Conversation, Message
from tests.sockets import chat_socket, receive_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_redis")]


async def connected(customer: Any, **kwargs: Any) -> Any:
    socket = await chat_socket(customer, **kwargs)
    connected, code = await socket.connect()
    assert connected, code
    return socket


async def test_it_refuses_a_socket_without_a_customer_session() -> None:
    socket = await chat_socket(None)
    connected, code = await socket.connect()
    assert not connected and code == 4401


async def test_it_refuses_a_foreign_origin(customer: Any) -> None:
    socket = await chat_socket(customer, origin=b"http://evil.example")
    connected, _ = await socket.connect()
    assert not connected


async def test_it_sends_the_history_on_connect(customer: Any) -> None:
    conversation = await database_sync_to_async(Conversation.objects.create)(customer=customer)
    await database_sync_to_async(Message.objects.create)(conversation=conversation, role="customer", text="earlier")
    socket = await connected(customer)
    history = await socket.receive_json_from()
    assert history["type"] == "history"
    assert history["conversation"]["id"] == str(conversation.id)
    assert [m["text"] for m in history["messages"]] == ["earlier"]
    assert history["worker_online"] is False
    await socket.disconnect()


async def test_a_message_is_echoed_with_its_ids_and_a_pending_reply_follows(customer: Any) -> None:
    socket = await connected(customer)
    await socket.receive_json_from()
    await socket.send_json_to({"type": "message", "text": "Hi <b>there</b>", "client_id": "c-1"})
    echo = await socket.receive_json_from()
    assert echo["type"] == "message"
    assert echo["message"]["client_id"] == "c-1" and echo["message"]["text"] == "Hi <b>there</b>"
    pending = await socket.receive_json_from()
    assert pending["message"]["role"] == "bot" and pending["message"]["status"] == "pending"
    notice = await socket.receive_json_from()
    assert notice["code"] == "worker_offline"
    await socket.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_frame"),
        (json.dumps({"text": "no type"}), "invalid_frame"),
        (json.dumps({"type": "dance"}), "unknown_type"),
        (json.dumps({"type": "message"}), "empty_text"),
        (json.dumps({"type": "message", "text": ""}), "empty_text"),
        (json.dumps({"type": "message", "text": "x" * 5000}), "text_too_long"),
    ],
)
async def test_a_bad_frame_gets_an_error_and_the_socket_stays_usable(customer: Any, frame: str, code: str) -> None:
    socket = await connected(customer)
    await socket.receive_json_from()
    await socket.send_to(text_data=frame)
    error = await socket.receive_json_from()
    assert error["type"] == "error" and error["code"] == code and error["detail"]
    await socket.send_json_to({"type": "message", "text": "still here"})
    assert (await socket.receive_json_from())["message"]["text"] == "still here"
    assert await database_sync_to_async(Message.objects.filter(role="customer").count)() == 1
    await socket.disconnect()


async def test_binary_frames_are_refused(customer: Any) -> None:
    socket = await connected(customer)
    await socket.receive_json_from()
    await socket.send_to(bytes_data=b"\x00\x01")
    assert (await socket.receive_json_from())["code"] == "binary_not_supported"
    await socket.disconnect()


@override_settings(CHAT_RATE_LIMIT_MESSAGES=2, CHAT_RATE_LIMIT_WINDOW_S=60)
async def test_a_flood_is_rate_limited_and_nothing_rejected_is_stored(customer: Any) -> None:
    socket = await connected(customer)
    await socket.receive_json_from()
    for i in range(2):
        await socket.send_json_to({"type": "message", "text": f"m{i}"})
        await receive_until(socket, "notice")
        await socket.send_json_to({"type": "stop"})
        await receive_until(socket, "done")
    await socket.send_json_to({"type": "message", "text": "flood"})
    error = await socket.receive_json_from()
    assert error["code"] == "rate_limited"
    texts = await database_sync_to_async(list)(Message.objects.filter(role="customer").values_list("text", flat=True))
    assert texts == ["m0", "m1"]
    await socket.disconnect()


@override_settings(CHAT_RATE_LIMIT_CONVERSATIONS=3, CHAT_RATE_LIMIT_WINDOW_S=60)
async def test_a_flood_of_new_conversations_is_refused_and_the_socket_stays_usable(customer: Any) -> None:
    socket = await connected(customer)
    await socket.receive_json_from()  # the first conversation, made on connect
    for _ in range(2):
        await socket.send_json_to({"type": "new_conversation"})
        assert (await socket.receive_json_from())["type"] == "history"
    await socket.send_json_to({"type": "new_conversation"})
    error = await socket.receive_json_from()
    assert error["type"] == "error" and error["code"] == "rate_limited"
    assert await database_sync_to_async(Conversation.objects.filter(customer=customer).count)() == 3
    await socket.send_json_to({"type": "message", "text": "still here"})
    echo = await receive_until(socket, "message")
    assert echo[-1]["message"]["text"] == "still here"
    await socket.disconnect()


async def test_a_second_customer_cannot_open_the_first_ones_conversation(customer: Any, second_customer: Any) -> None:
    conversation = await database_sync_to_async(Conversation.objects.create)(customer=customer)
    socket = await chat_socket(second_customer, query=f"conversation={conversation.id}")
    connected, code = await socket.connect()
    assert not connected and code == 4404


async def test_a_second_customer_never_receives_the_first_ones_events(customer: Any, second_customer: Any) -> None:
    alice, bob = await connected(customer), await connected(second_customer)
    await alice.receive_json_from()
    await bob.receive_json_from()
    await alice.send_json_to({"type": "message", "text": "private"})
    await receive_until(alice, "notice")
    assert await bob.receive_nothing(timeout=0.3)
    await alice.disconnect()
    await bob.disconnect()


async def test_stop_before_the_worker_starts_cancels_the_reply(customer: Any) -> None:
    socket = await connected(customer)
    await socket.receive_json_from()
    await socket.send_json_to({"type": "message", "text": "hi"})
    frames = await receive_until(socket, "notice")
    reply_id = frames[1]["message"]["id"]
    await socket.send_json_to({"type": "stop"})
    done = await socket.receive_json_from()
    assert done == {
        "type": "done",
        "message_id": reply_id,
        "text": "",
        "status": "cancelled",
        "error": "",
        "error_code": "",
    }
    await socket.disconnect()


async def test_new_conversation_switches_the_socket_to_a_fresh_history(customer: Any) -> None:
    socket = await connected(customer)
    first = await socket.receive_json_from()
    await socket.send_json_to({"type": "new_conversation"})
    second = await socket.receive_json_from()
    assert second["type"] == "history" and second["messages"] == []
    assert second["conversation"]["id"] != first["conversation"]["id"]
    await socket.disconnect()
