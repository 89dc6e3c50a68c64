"""The inference worker with the scripted engine: the real Redis stream, channel layer and database."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.test import override_settings

from conversations.chat import services as chat_services
from conversations.events import REPLY_FAILED_TEXT
from conversations.inference.fake import FakeEngine
from conversations.models import Message
from conversations.worker import services as worker_services
from conversations.workspace import services as workspace_services
from tests.sockets import chat_socket, receive_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_redis")]

LONG_REPLY = " ".join(f"word{i}" for i in range(60))


async def wait_for_heartbeat(redis_client: Any) -> None:
    from conversations import dispatch

    for _ in range(100):
        if redis_client.exists(dispatch.key(dispatch.HEARTBEAT)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the worker never sent a heartbeat")


async def open_chat(customer: Any) -> Any:
    socket = await chat_socket(customer)
    assert (await socket.connect())[0]
    await socket.receive_json_from()
    return socket


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(f["text"] for f in frames if f["type"] == "delta")


async def stored(message_id: int) -> Message:
    return await database_sync_to_async(Message.objects.get)(id=message_id)


async def test_it_streams_a_reply_and_stores_it(customer: Any, start_worker: Any, clean_redis: Any) -> None:
    start_worker(FakeEngine({"Hello": "Hi! What can I do for you?"}))
    await wait_for_heartbeat(clean_redis)
    socket = await open_chat(customer)
    await socket.send_json_to({"type": "message", "text": "Hello", "client_id": "c1"})
    frames = await receive_until(socket, "done")
    deltas = [f for f in frames if f["type"] == "delta"]
    assert len(deltas) >= 1
    assert text_of(frames) == "Hi! What can I do for you?"
    assert frames[-1]["status"] == "complete" and frames[-1]["text"] == "Hi! What can I do for you?"
    reply = await stored(frames[-1]["message_id"])
    assert reply.status == "complete" and reply.text == "Hi! What can I do for you?"
    assert reply.token_count == 7 and reply.model_name == "fake-engine"
    assert reply.created_at <= reply.first_token_at <= reply.finished_at
    await socket.disconnect()


async def test_the_prompt_holds_the_system_prompt_and_the_history(customer: Any, start_worker: Any) -> None:
    engine = FakeEngine()
    start_worker(engine)
    socket = await open_chat(customer)
    await socket.send_json_to({"type": "message", "text": "first question"})
    await receive_until(socket, "done")
    await socket.send_json_to({"type": "message", "text": "second question"})
    await receive_until(socket, "done")
    chat = engine.tokenizer.chats[engine.submitted[-1].prompt_ids]
    assert chat[0]["role"] == "system" and "customer-service" in chat[0]["content"]
    assert [m["role"] for m in chat[1:]] == ["user", "assistant", "user"]
    assert chat[-1]["content"] == "second question"
    await socket.disconnect()


async def test_a_message_sent_while_no_worker_runs_is_answered_when_one_starts(
    customer: Any, start_worker: Any
) -> None:
    socket = await open_chat(customer)
    await socket.send_json_to({"type": "message", "text": "anyone?"})
    frames = await receive_until(socket, "notice")
    assert frames[-1]["code"] == "worker_offline"
    await asyncio.sleep(0.3)
    start_worker()
    done = (await receive_until(socket, "done"))[-1]
    assert done["status"] == "complete" and done["text"]
    await socket.disconnect()


async def test_stop_keeps_the_partial_reply_as_cancelled(customer: Any, start_worker: Any) -> None:
    start_worker(FakeEngine(default_reply=LONG_REPLY, step_delay_s=0.03))
    socket = await open_chat(customer)
    await socket.send_json_to({"type": "message", "text": "tell me a lot"})
    await receive_until(socket, "delta")
    await socket.send_json_to({"type": "stop"})
    frames = await receive_until(socket, "done")
    done = frames[-1]
    assert done["status"] == "cancelled"
    assert 0 < len(done["text"]) < len(LONG_REPLY)
    reply = await stored(done["message_id"])
    assert reply.status == "cancelled" and reply.text == done["text"]
    await socket.disconnect()


async def test_a_reconnecting_browser_gets_the_reply_so_far_then_the_rest(customer: Any, start_worker: Any) -> None:
    start_worker(FakeEngine(default_reply=LONG_REPLY, step_delay_s=0.02))
    first = await open_chat(customer)
    await first.send_json_to({"type": "message", "text": "go"})
    await receive_until(first, "delta")
    await asyncio.sleep(0.2)
    second = await chat_socket(customer)
    assert (await second.connect())[0]
    history = await second.receive_json_from()
    reply = history["messages"][-1]
    assert reply["status"] == "streaming" and reply["text"]
    text = reply["text"]
    for frame in await receive_until(second, "done"):
        if frame["type"] == "delta" and frame["offset"] + len(frame["text"]) > len(text):
            assert frame["offset"] <= len(text), "a gap between the stored text and the live deltas"
            text += frame["text"][len(text) - frame["offset"] :]
    assert text == LONG_REPLY
    await first.disconnect()
    await second.disconnect()


async def test_a_reply_cut_off_by_a_dead_worker_is_regenerated_by_the_next(customer: Any, start_worker: Any) -> None:
    dying = start_worker(FakeEngine(default_reply=LONG_REPLY, step_delay_s=0.05), consumer="w1")
    socket = await open_chat(customer)
    await socket.send_json_to({"type": "message", "text": "go"})
    await receive_until(socket, "delta")
    await dying.stop()  # stops without finishing or acknowledging: what kill -9 leaves behind
    reply_id = (await database_sync_to_async(Message.objects.get)(role="bot")).id
    assert (await stored(reply_id)).status == "streaming"
    start_worker(FakeEngine(default_reply="Sorry, here it is again."), consumer="w1")
    frames = await receive_until(socket, "done")
    restart = next(f for f in frames if f["type"] == "message")
    assert restart["message"]["id"] == reply_id and restart["message"]["text"] == ""
    assert frames[-1]["status"] == "complete" and frames[-1]["text"] == "Sorry, here it is again."
    await socket.disconnect()


@override_settings(INFERENCE_REPLY_TIMEOUT_S=0.2)
async def test_a_reply_past_its_timeout_fails_and_can_be_retried(customer: Any, start_worker: Any) -> None:
    start_worker(FakeEngine(default_reply=LONG_REPLY, step_delay_s=0.05))
    socket = await open_chat(customer)
    await socket.send_json_to({"type": "message", "text": "slow please"})
    done = (await receive_until(socket, "done"))[-1]
    assert done["status"] == "failed" and done["error_code"] == "reply_failed"
    assert "too long" in (await stored(done["message_id"])).error  # the reason is for the agents
    await socket.send_json_to({"type": "retry"})
    retried = await socket.receive_json_from()  # pending, or already claimed by the worker
    assert retried["type"] == "message" and retried["message"]["status"] in ("pending", "streaming")
    assert retried["message"]["id"] != done["message_id"]
    await socket.disconnect()


async def test_an_unknown_adapter_fails_only_that_reply(customer: Any, start_worker: Any) -> None:
    from finetuning.models import ModelVersion

    engine = FakeEngine()
    engine.load_adapter = lambda name, path: None  # type: ignore[method-assign]  # loading "fails" silently
    await database_sync_to_async(ModelVersion.objects.create)(
        name="v-broken", base_model="x", adapter_path="/nowhere", status="active"
    )
    start_worker(engine)
    socket = await open_chat(customer)
    await socket.send_json_to({"type": "message", "text": "hi"})
    done = (await receive_until(socket, "done"))[-1]
    assert done["status"] == "failed" and done["error"] == REPLY_FAILED_TEXT
    assert "v-broken" in (await stored(done["message_id"])).error  # the reason is for the agents
    await socket.disconnect()


async def test_when_the_engine_queue_is_full_customers_hear_it_and_are_answered_in_order(
    customer: Any, second_customer: Any, start_worker: Any
) -> None:
    from conversations.models import Customer

    third_customer = await database_sync_to_async(Customer.objects.create)(display_name="Carol")
    start_worker(FakeEngine(default_reply=LONG_REPLY[:150], step_delay_s=0.04, max_running=1, max_queue=1))
    alice, bob, carol = [await open_chat(c) for c in (customer, second_customer, third_customer)]
    await alice.send_json_to({"type": "message", "text": "first"})
    await receive_until(alice, "delta")
    await bob.send_json_to({"type": "message", "text": "second"})  # waits in the engine's queue
    while (await bob.receive_json_from(timeout=5)).get("message", {}).get("status") != "streaming":
        pass
    await carol.send_json_to({"type": "message", "text": "third"})  # the queue is full
    carol_frames = await receive_until(carol, "done", timeout=30)
    assert any(f["type"] == "notice" and f["code"] == "busy" for f in carol_frames)
    assert carol_frames[-1]["status"] == "complete"
    bob_frames = await receive_until(bob, "done", timeout=20)
    assert not any(f["type"] == "notice" and f["code"] == "busy" for f in bob_frames)
    finished = await database_sync_to_async(list)(
        Message.objects.filter(role="bot")
        .order_by("finished_at")
        .values_list("conversation__customer__display_name", flat=True)
    )
    assert finished == ["Alice", "Bob", "Carol"]
    for socket in (alice, bob, carol):
        await socket.disconnect()


async def test_a_conversation_deleted_mid_reply_does_not_stall_the_others(
    customer: Any, second_customer: Any, start_worker: Any
) -> None:
    from conversations.models import Conversation

    engine = FakeEngine(default_reply=LONG_REPLY, step_delay_s=0.03)
    start_worker(engine)
    doomed = await open_chat(customer)
    await doomed.send_json_to({"type": "message", "text": "go"})
    await receive_until(doomed, "delta")
    await database_sync_to_async(Conversation.objects.filter(customer=customer).delete)()
    await doomed.disconnect()
    other = await open_chat(second_customer)
    await other.send_json_to({"type": "message", "text": "hello"})
    done = (await receive_until(other, "done", timeout=10))[-1]
    assert done["status"] == "complete" and done["text"] == LONG_REPLY
    await other.disconnect()


@pytest.fixture
def fast_recovery(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    from conversations.worker import loops

    monkeypatch.setattr(loops, "RECOVER_TICK_S", 0.1)
    monkeypatch.setattr(loops, "RECOVER_SWEEP_EVERY", 1)
    settings.INFERENCE_REQUEUE_AFTER_S = 0.3


async def test_a_takeover_silences_a_streaming_reply_even_when_the_cancel_is_lost(
    customer: Any, agent_user: Any, start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conversations import dispatch

    monkeypatch.setattr(dispatch, "generation_cancel", lambda **_: None)  # the pub/sub stop never arrives
    engine = FakeEngine(default_reply=LONG_REPLY, step_delay_s=0.03)
    start_worker(engine)
    socket = await open_chat(customer)
    await socket.send_json_to({"type": "message", "text": "tell me a lot"})
    await receive_until(socket, "delta")
    reply = await database_sync_to_async(Message.objects.select_related("conversation").get)(role="bot")
    await database_sync_to_async(workspace_services.conversation_takeover)(
        conversation=reply.conversation, agent=agent_user
    )
    said_before_takeover = (await stored(reply.id)).text
    frames = await receive_until(socket, "done")
    done = frames[-1]
    assert done["status"] == "cancelled"
    # Nothing the bot wrote after the takeover reached the customer or the database.
    assert done["text"] == said_before_takeover
    for frame in frames:
        if frame["type"] == "delta":
            assert frame["offset"] + len(frame["text"]) <= len(said_before_takeover)
    final = await stored(reply.id)
    assert final.status == "cancelled" and final.text == said_before_takeover
    assert len(final.text) < len(LONG_REPLY)
    await socket.disconnect()


async def test_a_reply_completing_after_a_takeover_is_stored_as_cancelled(customer: Any, agent_user: Any) -> None:
    result = await database_sync_to_async(chat_services.message_send)(
        conversation=await database_sync_to_async(chat_services.conversation_current)(customer=customer), text="hi"
    )
    reply = await database_sync_to_async(Message.objects.select_related("conversation").get)(id=result.bot_message.id)
    await database_sync_to_async(worker_services.reply_claim)(message_id=reply.id)
    await database_sync_to_async(workspace_services.conversation_takeover)(
        conversation=reply.conversation, agent=agent_user
    )
    finished = await database_sync_to_async(worker_services.reply_finish)(
        message_id=reply.id, text="the bot's last word", finish_reason="stop", token_count=4
    )
    assert finished is not None and finished.status == "cancelled"
    # A second finish (a duplicate delivery) changes nothing.
    again = await database_sync_to_async(worker_services.reply_finish)(
        message_id=reply.id, text="something else", finish_reason="stop", token_count=2
    )
    assert again is None and (await stored(reply.id)).text == "the bot's last word"


async def test_a_worker_under_another_name_takes_over_a_dead_workers_reply(
    customer: Any, start_worker: Any, fast_recovery: None
) -> None:
    dying = start_worker(FakeEngine(default_reply=LONG_REPLY, step_delay_s=0.05), consumer="gone-for-good")
    socket = await open_chat(customer)
    await socket.send_json_to({"type": "message", "text": "go"})
    await receive_until(socket, "delta")
    await dying.stop()  # leaves its entry pending, delivered to a consumer that never comes back
    reply_id = (await database_sync_to_async(Message.objects.get)(role="bot")).id
    assert (await stored(reply_id)).status == "streaming"
    start_worker(FakeEngine(default_reply="Here it is, from another worker."), consumer="replacement")
    frames = await receive_until(socket, "done")
    assert frames[-1]["message_id"] == reply_id
    assert frames[-1]["status"] == "complete" and frames[-1]["text"] == "Here it is, from another worker."
    await socket.disconnect()


async def test_a_live_workers_reply_is_not_taken_by_another(
    customer: Any, start_worker: Any, fast_recovery: None, clean_redis: Any
) -> None:
    start_worker(FakeEngine(default_reply=LONG_REPLY, step_delay_s=0.02), consumer="busy")
    await wait_for_heartbeat(clean_redis)
    socket = await open_chat(customer)
    await socket.send_json_to({"type": "message", "text": "go"})
    await receive_until(socket, "delta")
    idle = FakeEngine(default_reply="I should never answer this.")
    start_worker(idle, consumer="idle")
    frames = await receive_until(socket, "done")
    assert frames[-1]["status"] == "complete" and frames[-1]["text"] == LONG_REPLY
    assert idle.submitted == []
    restarts = [f for f in frames if f["type"] == "message" and f["message"]["role"] == "bot"]
    assert restarts == []  # a second claim would have restarted the reply from empty text
    await socket.disconnect()


async def test_a_reply_whose_request_never_reached_redis_is_queued_again(
    customer: Any, start_worker: Any, fast_recovery: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    from conversations import dispatch

    def redis_down(**_: Any) -> None:
        raise redis.ConnectionError("Redis went away")

    queue = dispatch.generation_request
    monkeypatch.setattr(dispatch, "generation_request", redis_down)
    socket = await open_chat(customer)
    await socket.send_json_to({"type": "message", "text": "are you there?", "client_id": "lost-1"})
    echoed = await receive_until(socket, "message")
    assert echoed[-1]["message"]["text"] == "are you there?"  # stored, whatever Redis did
    pending = (await receive_until(socket, "message"))[-1]["message"]
    assert pending["role"] == "bot" and pending["status"] == "pending"
    monkeypatch.setattr(dispatch, "generation_request", queue)
    start_worker(FakeEngine(default_reply="Yes, sorry for the wait."))
    done = (await receive_until(socket, "done", timeout=15))[-1]
    assert done["message_id"] == pending["id"] and done["status"] == "complete"
    await socket.disconnect()


class VerboseTemplate:
    """A tokenizer whose chat template adds more markup per turn than the history budget assumes."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [1] * len(text.split())

    def apply_chat_template(self, messages: list[dict[str, str]], **_: object) -> list[int]:
        ids: list[int] = []
        for m in messages:
            ids += [7] * 20 + self.encode(m["content"])
        return ids


def long_conversation(customer: Any, turns: int) -> Message:
    conversation = chat_services.conversation_current(customer=customer)
    for i in range(turns):
        Message.objects.create(conversation=conversation, role="customer", text=f"question {i} " + "word " * 30)
        Message.objects.create(conversation=conversation, role="bot", status="complete", text="answer " * 30)
    Message.objects.create(conversation=conversation, role="customer", text="the last question")
    return Message.objects.create(conversation=conversation, role="bot", status="pending")


@pytest.mark.parametrize(("context", "max_positions", "limit"), [(400, None, 300), (4000, 350, 250)])
def test_the_templated_prompt_fits_the_context_and_keeps_the_question(
    customer: Any, settings: Any, context: int, max_positions: int | None, limit: int
) -> None:
    from conversations.prompts import prompt_for

    settings.INFERENCE_CONTEXT_TOKENS = context
    reply = long_conversation(customer, turns=20)
    ids = prompt_for(reply, VerboseTemplate(), max_new_tokens=100, max_positions=max_positions)
    assert len(ids) <= limit
    assert len(ids) > limit - 80  # not needlessly short: a few turns of history still fit
    assert ids[-3:] == [1, 1, 1]  # "the last question" ends the prompt


def edit_system_prompt_in_the_admin(text: str) -> None:
    from django.contrib.auth.models import User
    from django.test import Client

    from conversations.models import BotSettings

    admin = User.objects.create_superuser("root", password="a-long-admin-password")
    client = Client()
    client.force_login(admin)
    row = BotSettings.load()
    response = client.post(f"/admin/conversations/botsettings/{row.pk}/change/", {"system_prompt": text})
    assert response.status_code == 302, response.content[:500]


async def test_an_admin_edits_the_system_prompt_and_the_running_worker_uses_it_at_once(
    customer: Any, start_worker: Any
) -> None:
    engine = FakeEngine()
    start_worker(engine)
    socket = await open_chat(customer)
    await socket.send_json_to({"type": "message", "text": "before"})
    await receive_until(socket, "done")
    await database_sync_to_async(edit_system_prompt_in_the_admin)("You are Bolt, the bike shop's assistant.")
    await socket.send_json_to({"type": "message", "text": "after"})
    await receive_until(socket, "done")
    first, second = (engine.tokenizer.chats[r.prompt_ids] for r in engine.submitted)
    assert "customer-service" in first[0]["content"]
    assert second[0] == {"role": "system", "content": "You are Bolt, the bike shop's assistant."}
    await socket.disconnect()
