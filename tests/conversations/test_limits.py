"""The chat's abuse limits (conversations/limits.py, docs/settings.md): each refuses past its bound
and allows within it, on the real Redis, the real application and the real database."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection, transaction
from django.test import Client, override_settings

from conversations.chat import services as chat_services
from conversations.errors import ChatError
from conversations.events import REPLY_FAILED_TEXT
from conversations.inference.fake import FakeEngine
from conversations.models import Conversation, Customer, Message
from tests.sockets import chat_socket, receive_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_redis")]

LONG_REPLY = " ".join(f"word{i}" for i in range(40))


async def socket_from(address: str, customer: Any, **kwargs: Any) -> WebsocketCommunicator:
    socket = await chat_socket(customer, **kwargs)
    socket.scope["client"] = [address, 50000]  # before the application first runs: nothing awaited since
    return socket


async def opened(address: str, customer: Any) -> WebsocketCommunicator:
    socket = await socket_from(address, customer)
    connected, code = await socket.connect()
    assert connected, code
    assert (await socket.receive_json_from())["type"] == "history"
    return socket


async def refused(address: str, customer: Any) -> dict[str, Any]:
    """The close frame of a socket the server accepted only to close it at once."""
    socket = await socket_from(address, customer)
    connected, _ = await socket.connect()
    assert connected  # accepted, so the close code and reason reach a browser
    closed = await socket.receive_output()
    assert closed["type"] == "websocket.close"
    return closed


@override_settings(CHAT_ADDRESS_CUSTOMERS=2, CHAT_ADDRESS_CUSTOMERS_WINDOW_S=600)
def test_it_creates_customers_for_one_address_up_to_the_limit_then_answers_429() -> None:
    visits = [Client(REMOTE_ADDR="203.0.113.7").get("/") for _ in range(3)]
    assert [v.status_code for v in visits] == [200, 200, 429]
    assert b"Too many new chats" in visits[2].content and b'id="messages"' not in visits[2].content
    assert Customer.objects.count() == 2
    assert Client(REMOTE_ADDR="198.51.100.1").get("/").status_code == 200
    assert Customer.objects.count() == 3


@override_settings(CHAT_ADDRESS_CUSTOMERS=1)
def test_a_returning_customer_is_served_past_the_limit(client: Client) -> None:
    assert client.get("/", REMOTE_ADDR="203.0.113.7").status_code == 200
    assert Client(REMOTE_ADDR="203.0.113.7").get("/").status_code == 429
    assert client.get("/", REMOTE_ADDR="203.0.113.7").status_code == 200
    assert Customer.objects.count() == 1


@pytest.mark.parametrize(
    ("remote", "forwarded", "hops", "stored"),
    [
        ("203.0.113.7", "", 0, "203.0.113.7"),
        ("10.0.0.2", "1.2.3.4, 198.51.100.9", 1, "198.51.100.9"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "", 0, "2001:db8:1:2::"),  # counted by its /64
    ],
)
def test_a_new_customer_records_the_client_address(remote: str, forwarded: str, hops: int, stored: str) -> None:
    with override_settings(TRUSTED_PROXY_HOPS=hops):
        Client(REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded).get("/")
    assert Customer.objects.get().address == stored


@override_settings(CHAT_ADDRESS_SOCKETS=2, CHAT_ADDRESS_WINDOW_S=60)
async def test_sockets_opened_from_one_address_past_the_limit_are_closed_with_a_reason(
    customer: Any, second_customer: Any
) -> None:
    first, second = await opened("203.0.113.7", customer), await opened("203.0.113.7", second_customer)
    closed = await refused("203.0.113.7", customer)
    assert closed["code"] == 4429 and "Too many connections" in closed["reason"]
    other = await opened("198.51.100.1", customer)
    for socket in (first, second, other):
        await socket.disconnect()


@override_settings(CHAT_SOCKETS_PER_CUSTOMER=2)
async def test_a_customer_holds_at_most_the_bound_of_open_sockets(customer: Any, second_customer: Any) -> None:
    first, second = await opened("203.0.113.7", customer), await opened("203.0.113.8", customer)
    closed = await refused("203.0.113.9", customer)
    assert closed["code"] == 4409 and "too many tabs" in closed["reason"]
    other_customer = await opened("203.0.113.7", second_customer)
    await first.disconnect()
    again = await opened("203.0.113.7", customer)  # a closed socket no longer counts
    for socket in (second, other_customer, again):
        await socket.disconnect()


@pytest.mark.parametrize(
    ("frame", "answer"),
    [
        ({"type": "retry"}, "nothing_to_retry"),
        ({"type": "feedback", "message_id": 123456, "positive": True}, "not_found"),
        ({"type": "satisfaction", "score": 5}, "not_closed"),
    ],
)
@override_settings(CHAT_ADDRESS_FRAMES=3, CHAT_ADDRESS_WINDOW_S=60)
async def test_frames_from_one_address_past_the_limit_are_refused(
    customer: Any, second_customer: Any, frame: dict[str, Any], answer: str
) -> None:
    alice, bob = await opened("203.0.113.7", customer), await opened("203.0.113.7", second_customer)
    for socket in (alice, alice, bob):  # the address counts, whoever's socket it is
        await socket.send_json_to(frame)
        assert (await socket.receive_json_from())["code"] == answer
    await alice.send_json_to(frame)
    refusal = await alice.receive_json_from()
    assert refusal["type"] == "error" and refusal["code"] == "rate_limited" and "network" in refusal["detail"]
    elsewhere = await opened("198.51.100.1", customer)
    await elsewhere.send_json_to(frame)
    assert (await elsewhere.receive_json_from())["code"] == answer
    for socket in (alice, bob, elsewhere):
        await socket.disconnect()


@override_settings(CHAT_RATE_LIMIT_MESSAGES=3, CHAT_RATE_LIMIT_WINDOW_S=60)
def test_retries_count_against_the_customers_message_limit(conversation: Conversation) -> None:
    chat_services.message_send(conversation=conversation, text="hello")
    for _ in range(2):
        Message.objects.filter(role="bot").update(status="failed")
        chat_services.reply_retry(conversation=conversation)
    Message.objects.filter(role="bot").update(status="failed")
    with pytest.raises(ChatError) as error:
        chat_services.reply_retry(conversation=conversation)
    assert error.value.code == "rate_limited"
    assert conversation.messages.filter(role="bot").count() == 3


@override_settings(CHAT_RATE_LIMIT_MESSAGES=1, CHAT_RATE_LIMIT_WINDOW_S=60)
def test_the_message_limit_is_checked_in_the_same_lock_as_the_write(customer: Any) -> None:
    conversation = Conversation.objects.create(customer=customer)
    other = Conversation.objects.create(customer=customer)
    writing = threading.Event()

    def another_socket_sending() -> None:
        """A send on the customer's other conversation, in the middle of its transaction."""
        try:
            with transaction.atomic():
                list(Customer.objects.select_for_update().filter(id=customer.id))
                Message.objects.create(conversation=other, role="customer", text="first")
                writing.set()
                time.sleep(0.5)  # the second send arrives while this one is uncommitted
        finally:
            connection.close()

    thread = threading.Thread(target=another_socket_sending)
    thread.start()
    assert writing.wait(10)
    with pytest.raises(ChatError) as error:
        chat_services.message_send(conversation=conversation, text="second")
    thread.join()
    assert error.value.code == "rate_limited"
    assert Message.objects.filter(role="customer").count() == 1


@override_settings(INFERENCE_MAX_WAITING=1)
async def test_past_the_workers_waiting_bound_a_reply_fails_at_once_and_can_be_retried(
    customer: Any, second_customer: Any, start_worker: Any
) -> None:
    carol, dave = [await database_sync_to_async(Customer.objects.create)(display_name=n) for n in ("Carol", "Dave")]
    start_worker(FakeEngine(default_reply=LONG_REPLY, step_delay_s=0.04, max_running=1, max_queue=1))
    sockets = [await opened("203.0.113.7", c) for c in (customer, second_customer, carol, dave)]
    alice, bob, carol_socket, dave_socket = sockets
    await alice.send_json_to({"type": "message", "text": "first"})  # decoding
    await receive_until(alice, "delta")
    await bob.send_json_to({"type": "message", "text": "second"})  # in the engine's queue
    while (await bob.receive_json_from(timeout=5)).get("message", {}).get("status") != "streaming":
        pass
    await carol_socket.send_json_to({"type": "message", "text": "third"})  # waits in the worker: within the bound
    while (await carol_socket.receive_json_from(timeout=5)).get("code") != "busy":
        pass
    await dave_socket.send_json_to({"type": "message", "text": "fourth"})  # past the bound
    dave_frames = await receive_until(dave_socket, "notice", timeout=10)  # the worker may beat the echo
    done = next(f for f in dave_frames if f["type"] == "done")
    assert done["status"] == "failed" and done["error"] == REPLY_FAILED_TEXT  # the notice says why
    stored = await database_sync_to_async(Message.objects.get)(id=done["message_id"])
    assert "too busy" in stored.error  # what agents see
    assert dave_frames[-1]["code"] == "queue_full" and dave_frames[-1]["detail"]
    assert (await receive_until(carol_socket, "done", timeout=30))[-1]["status"] == "complete"
    await dave_socket.send_json_to({"type": "retry"})
    assert (await receive_until(dave_socket, "done", timeout=30))[-1]["status"] == "complete"
    for socket in sockets:
        await socket.disconnect()


@override_settings(REDIS_URL="redis://127.0.0.1:1/0", CHAT_ADDRESS_CUSTOMERS=0)
def test_with_redis_down_the_limits_let_everyone_in_and_say_so(caplog: Any) -> None:
    from conversations import limits

    with caplog.at_level(logging.WARNING, logger="conversations.limits"):
        assert Client(REMOTE_ADDR="203.0.113.7").get("/").status_code == 200
        assert limits.socket_register(customer_id="c", channel="x") is True
        assert limits.frame_allowed(address="203.0.113.7") is True
    assert Customer.objects.count() == 1
    assert "Redis did not answer" in caplog.text


def test_the_limits_share_their_counts_with_every_process(redis_client: Any) -> None:
    from conversations import limits

    with override_settings(CHAT_ADDRESS_FRAMES=1):
        assert limits.frame_allowed(address="203.0.113.7")
        assert list(redis_client.scan_iter(limits.keys_pattern()))  # in Redis, not in this process
        assert not limits.frame_allowed(address="203.0.113.7")
