"""Every frame the customer's chat can produce, walked over a real socket: nothing agent-only, no
internal error text. The worker is the real one, in process, with the scripted engine."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.test import Client

from conversations import events
from conversations.chat import services as chat_services
from conversations.inference.fake import FakeEngine
from conversations.inference.types import TokenChunk
from conversations.models import Conversation, Message
from tests.sockets import open_agent, open_chat, receive_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_redis")]

INTERNAL_ERROR = (
    "prefill failed: Traceback (most recent call last):\n"
    '  File "/srv/chatbot/conversations/inference/engine.py", line 349, in _prefill\n'
    "RuntimeError: CUDA out of memory"
)
AGENT_ONLY_KEYS = {
    "model_version",
    "model",
    "claimed_by",
    "author_id",
    "agent_id",
    "customer",
    "note",
    "notes",
    "tags",
    "reviewed",
    "exclude_from_training",
    "correction",
    "agent_feedback",
    "customer_feedback",
    "serve_error",
    "has_negative",
    "last_text",
}
INTERNAL_TEXT = re.compile(r"Traceback|File \"|\.py\b|/srv/|/tmp/|RuntimeError|CUDA|v-secret|SECRET")


class FailsOnce(FakeEngine):
    """The first reply fails inside the engine with a traceback and a file path; later ones answer."""

    failed = False

    def _advance(self, run: Any, *, cancelled: bool) -> TokenChunk:
        if not self.failed:
            self.failed = True
            return TokenChunk(run.request.request_id, "", 0, "error", INTERNAL_ERROR)
        return super()._advance(run, cancelled=cancelled)


def keys_anywhere(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_anywhere(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_anywhere(v)}
    return set()


def without_own_profile(frame: dict[str, Any]) -> dict[str, Any]:
    """The history and profile frames carry the customer's own name and e-mail: theirs to see.
    Nothing else about a customer (an inbox line's "customer") may reach them."""
    if frame.get("type") in {"history", "profile"} and isinstance(frame.get("customer"), dict):
        assert set(frame["customer"]) == {"name", "email"}, frame
        return {k: v for k, v in frame.items() if k != "customer"}
    return frame


def assert_customer_safe(frames: list[dict[str, Any]]) -> None:
    for frame in frames:
        assert not keys_anywhere(without_own_profile(frame)) & AGENT_ONLY_KEYS, frame
        assert not INTERNAL_TEXT.search(json.dumps(frame)), frame


def a_secret_version(folder: Path) -> None:
    from finetuning.models import ModelVersion

    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    ModelVersion.objects.create(name="v-secret", base_model="x", adapter_path=str(folder), status="active")


@sync_to_async
def review_as_agent(agent_user: Any, conversation_id: str, reply_id: int) -> None:
    client = Client()
    client.force_login(agent_user)
    headers = {"HTTP_ACCEPT": "application/json"}
    posts = [
        (
            f"/agent/conversations/{conversation_id}/review",
            {"note": "SECRET-NOTE", "tags": "SECRET-TAG", "reviewed": "1"},
        ),
        (f"/agent/messages/{reply_id}/feedback", {"positive": "0", "reason": "rude", "comment": "SECRET-RATING"}),
        (f"/agent/messages/{reply_id}/correction", {"text": "SECRET-CORRECTION"}),
    ]
    for path, data in posts:
        assert client.post(path, data, **headers).status_code == 200


async def test_it_walks_every_customer_frame_and_none_carries_agent_only_data_or_internal_errors(
    customer: Any, agent_user: Any, start_worker: Any, tmp_path: Path
) -> None:
    await database_sync_to_async(a_secret_version)(tmp_path / "v-secret")
    chat, history = await open_chat(customer)
    seen = [history]
    conversation_id = history["conversation"]["id"]

    await chat.send_json_to({"type": "message", "text": "where is my parcel?", "client_id": "c1"})
    seen += await receive_until(chat, "notice")  # no worker yet: the message waits, and the customer hears why
    start_worker(FailsOnce(default_reply="It ships today."))
    seen += await receive_until(chat, "done", timeout=15)
    failed = seen[-1]
    assert failed["status"] == "failed"
    assert (failed["error"], failed["error_code"]) == (events.REPLY_FAILED_TEXT, events.REPLY_FAILED)

    await chat.send_json_to({"type": "retry"})
    seen += await receive_until(chat, "done", timeout=15)
    answered = seen[-1]
    assert answered["status"] == "complete" and answered["text"] == "It ships today."
    await chat.send_json_to({"type": "message", "text": "where is my parcel?", "client_id": "c1"})
    seen += await receive_until(chat, "message")  # a resend: the stored message, echoed to this socket alone
    await chat.send_json_to({"type": "feedback", "message_id": answered["message_id"], "positive": True})
    seen += await receive_until(chat, "feedback")
    await chat.send_json_to({"type": "bogus"})
    seen += await receive_until(chat, "error")
    await chat.send_json_to({"type": "profile", "name": "Alice", "email": "alice@example.com"})
    seen += await receive_until(chat, "profile")

    agent = await open_agent(agent_user)
    await agent.send_json_to({"type": "watch", "conversation_id": conversation_id})
    await receive_until(agent, "history")
    await chat.send_json_to({"type": "handoff"})
    seen += await receive_until(chat, "status")
    await agent.send_json_to({"type": "takeover", "conversation_id": conversation_id})
    seen += await receive_until(chat, "status")
    await agent.send_json_to({"type": "message", "conversation_id": conversation_id, "text": "Dana here."})
    seen += await receive_until(chat, "message")
    await review_as_agent(agent_user, conversation_id, answered["message_id"])
    await receive_until(agent, lambda f: f["type"] == "review" and "correction" in f)
    await agent.send_json_to({"type": "close", "conversation_id": conversation_id})
    seen += await receive_until(chat, "status")
    await chat.send_json_to({"type": "satisfaction", "score": 5})
    seen += await receive_until(chat, "satisfaction")
    await chat.disconnect()

    chat, history = await open_chat(customer, query=f"conversation={conversation_id}")
    seen.append(history)  # everything stored, as the customer gets it back after a reload
    await chat.send_json_to({"type": "new_conversation"})
    seen += await receive_until(chat, "history")
    await chat.disconnect()
    await agent.disconnect()

    kinds = {frame["type"] for frame in seen}
    assert kinds >= {
        "history",
        "message",
        "delta",
        "done",
        "notice",
        "feedback",
        "error",
        "status",
        "satisfaction",
        "profile",
    }
    assert_customer_safe(seen)
    stored_failure = next(m for m in history["messages"] if m["status"] == "failed")
    assert (stored_failure["error"], stored_failure["error_code"]) == (events.REPLY_FAILED_TEXT, events.REPLY_FAILED)
    assert [m["author"] for m in history["messages"] if m["role"] == "agent"] == ["Dana"]


async def test_agents_still_see_the_detailed_error_and_the_version(
    customer: Any, agent_user: Any, start_worker: Any, tmp_path: Path
) -> None:
    await database_sync_to_async(a_secret_version)(tmp_path / "v-secret")
    chat, history = await open_chat(customer)
    agent = await open_agent(agent_user)
    await agent.send_json_to({"type": "watch", "conversation_id": history["conversation"]["id"]})
    await receive_until(agent, "history")
    start_worker(FailsOnce())
    await chat.send_json_to({"type": "message", "text": "hello"})
    live = (await receive_until(agent, "done", timeout=15))[-1]
    assert live["error"].startswith("prefill failed: Traceback")
    await agent.send_json_to({"type": "watch", "conversation_id": history["conversation"]["id"]})
    stored = (await receive_until(agent, "history"))[-1]
    reply = next(m for m in stored["messages"] if m["role"] == "bot")
    assert reply["model_version"] == "v-secret" and "engine.py" in reply["error"]
    await chat.disconnect()
    await agent.disconnect()


def test_it_filters_a_history_frame_built_for_agents() -> None:
    failed = {"id": 2, "role": "bot", "status": "failed", "error": INTERNAL_ERROR, "model_version": "v-secret"}
    frame = {
        "type": "history",
        "conversation": {"id": "c", "status": "bot", "note": "SECRET"},
        "messages": [
            {"id": 1, "role": "system", "text": "Dana joined the conversation.", "grounding": "SECRET"},
            failed,
        ],
        "feedback": {"2": {"positive": False, "reason": "rude", "comment": "", "author": "SECRET"}},
        "worker": "online",
        "worker_online": True,
        "inbox": ["SECRET"],
    }
    filtered = events.for_customer(frame)
    assert filtered is not None
    assert_customer_safe([filtered])
    assert filtered["messages"] == [
        {"id": 1, "role": "system", "text": "Dana joined the conversation."},
        {"id": 2, "role": "bot", "status": "failed", "error": events.REPLY_FAILED_TEXT, "error_code": "reply_failed"},
    ]
    assert events.for_customer(filtered) == filtered


def test_it_hides_a_stored_internal_error_in_the_history_a_customer_gets(customer: Any) -> None:
    conversation = Conversation.objects.create(customer=customer)
    Message.objects.create(conversation=conversation, role="bot", status="failed", error=INTERNAL_ERROR[:200])
    from conversations.selectors import history_frame

    frame = events.for_customer(history_frame(conversation))
    assert frame is not None
    assert_customer_safe([frame])


@pytest.mark.browser
def test_the_chat_page_shows_a_failed_reply_as_the_fixed_message(fake_system: Any, browser: Any) -> None:
    from conversations.models import Customer

    page = browser.new_context().new_page()
    page.goto(fake_system.url + "/")
    page.wait_for_selector("#connection.online")
    conversation = chat_services.conversation_current(customer=Customer.objects.order_by("-created_at").first())
    Message.objects.create(conversation=conversation, role="customer", text="where is my parcel?")
    Message.objects.create(conversation=conversation, role="bot", status="failed", error=INTERNAL_ERROR[:200])
    page.reload()
    meta = page.locator("li.msg.bot.failed .meta")
    meta.wait_for()
    assert (meta.text_content() or "").startswith(events.REPLY_FAILED_TEXT)
    assert meta.locator("button").text_content() == "Retry"
    assert not INTERNAL_TEXT.search(page.content())
