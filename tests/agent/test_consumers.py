"""Both sockets over the real application and the real Redis channel layer."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.test import Client

from conversations import events
from conversations.models import Conversation, Feedback, Message
from conversations.worker import services as worker_services
from tests.sockets import open_agent, open_chat, receive_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_redis")]


@database_sync_to_async
def refreshed(conversation: Conversation) -> Conversation:
    conversation.refresh_from_db()
    return conversation


async def test_an_agent_takes_over_and_the_customer_hears_them_live(customer: Any, agent_user: Any) -> None:
    chat, history = await open_chat(customer)
    conversation_id = history["conversation"]["id"]
    assert history["conversation"]["status"] == "bot"
    agent = await open_agent(agent_user)
    await agent.send_json_to({"type": "watch", "conversation_id": conversation_id})
    assert (await agent.receive_json_from())["type"] == "history"

    await chat.send_json_to({"type": "message", "text": "Hello", "client_id": "c1"})
    frames = await receive_until(chat, lambda f: f["type"] == "message" and f["message"]["role"] == "bot")
    pending = frames[-1]["message"]

    await agent.send_json_to({"type": "takeover", "conversation_id": conversation_id})
    frames = await receive_until(chat, "status")
    cancelled = {"type": "done", "message_id": pending["id"], "text": "", "status": "cancelled"}
    assert {**cancelled, "error": "", "error_code": ""} in frames
    assert frames[-1]["conversation"]["status"] == "agent"
    assert frames[-1]["conversation"]["agent"] == "Dana"

    await agent.send_json_to(
        {"type": "message", "conversation_id": conversation_id, "text": "Dana here. How can I help?"}
    )
    said = (await receive_until(chat, lambda f: f["type"] == "message" and f["message"]["role"] == "agent"))[-1]
    said = said["message"]
    assert (said["role"], said["author"], said["text"]) == ("agent", "Dana", "Dana here. How can I help?")

    await chat.send_json_to({"type": "message", "text": "My parcel is late", "client_id": "c2"})
    echo = (await receive_until(chat, "message"))[-1]
    assert echo["message"]["role"] == "customer"
    assert await chat.receive_nothing(timeout=0.3)  # no bot reply while the agent holds it
    seen_by_agent = await receive_until(agent, lambda f: f["type"] == "message" and f["message"]["client_id"] == "c2")
    assert seen_by_agent[-1]["conversation_id"] == conversation_id

    await agent.send_json_to({"type": "hand_back", "conversation_id": conversation_id})
    status = (await receive_until(chat, "status"))[-1]
    assert status["conversation"]["status"] == "bot" and status["conversation"]["agent"] == ""
    await chat.send_json_to({"type": "message", "text": "Thanks", "client_id": "c3"})
    frames = await receive_until(chat, lambda f: f["type"] == "message" and f["message"]["role"] == "bot")
    assert frames[-1]["message"]["status"] == "pending"
    await chat.disconnect()
    await agent.disconnect()


async def test_a_handoff_phrase_alerts_the_agents_and_tells_the_customer(customer: Any, agent_user: Any) -> None:
    agent = await open_agent(agent_user)
    chat, history = await open_chat(customer)
    await chat.send_json_to({"type": "message", "text": "Let me talk to a person", "client_id": "c1"})
    frames = await receive_until(chat, "status")
    assert frames[-1]["conversation"]["status"] == "waiting"
    assert not any(f["type"] == "message" and f["message"]["role"] == "bot" for f in frames)
    alert = (await receive_until(agent, lambda f: f["type"] == "inbox" and f["alert"]))[-1]
    assert alert["conversation"]["id"] == history["conversation"]["id"]
    assert alert["conversation"]["status"] == "waiting"
    assert alert["conversation"]["last_text"] == "Let me talk to a person"
    await chat.disconnect()
    await agent.disconnect()


async def test_the_talk_to_a_person_button_asks_for_an_agent(customer: Any, agent_user: Any) -> None:
    agent = await open_agent(agent_user)
    chat, history = await open_chat(customer)
    await chat.send_json_to({"type": "handoff"})
    assert (await receive_until(chat, "status"))[-1]["conversation"]["status"] == "waiting"
    alert = (await receive_until(agent, "inbox"))[-1]
    assert alert["alert"] is True and alert["conversation"]["id"] == history["conversation"]["id"]
    await chat.disconnect()
    await agent.disconnect()


async def test_a_new_customer_message_appears_in_the_inbox_live(customer: Any, agent_user: Any) -> None:
    agent = await open_agent(agent_user)
    chat, _ = await open_chat(customer)
    await chat.send_json_to({"type": "message", "text": "Hi there", "client_id": "c1"})
    item = (await receive_until(agent, "inbox"))[-1]
    assert item["alert"] is False and item["conversation"]["last_text"] == "Hi there"
    await chat.disconnect()
    await agent.disconnect()


async def test_the_customer_rates_a_reply_and_changes_their_mind(customer: Any, agent_user: Any) -> None:
    conversation = await database_sync_to_async(Conversation.objects.create)(customer=customer)
    reply = await database_sync_to_async(Message.objects.create)(conversation=conversation, role="bot", text="Hi")
    agent = await open_agent(agent_user)
    chat, _ = await open_chat(customer)
    await chat.send_json_to({"type": "feedback", "message_id": reply.id, "positive": True})
    assert (await chat.receive_json_from())["feedback"]["positive"] is True
    await chat.send_json_to(
        {"type": "feedback", "message_id": reply.id, "positive": False, "reason": "wrong", "comment": "No"}
    )
    answer = await chat.receive_json_from()
    assert answer == {
        "type": "feedback",
        "message_id": reply.id,
        "feedback": {"positive": False, "reason": "wrong", "comment": "No"},
    }
    review = (await receive_until(agent, lambda f: f["type"] == "review" and not f["customer_feedback"]["positive"]))[
        -1
    ]
    assert review["conversation_id"] == str(conversation.id)
    stored = await database_sync_to_async(Feedback.objects.get)(message=reply)
    assert (stored.source, stored.positive, stored.reason) == ("customer", False, "wrong")

    await chat.disconnect()
    _, history = await open_chat(customer)  # a reload shows the customer their own rating
    assert history["feedback"] == {str(reply.id): {"positive": False, "reason": "wrong", "comment": "No"}}
    await agent.disconnect()


async def test_a_customer_cannot_rate_a_reply_in_someone_elses_conversation(
    customer: Any, second_customer: Any
) -> None:
    theirs = await database_sync_to_async(Conversation.objects.create)(customer=second_customer)
    reply = await database_sync_to_async(Message.objects.create)(conversation=theirs, role="bot", text="Hi")
    chat, _ = await open_chat(customer)
    await chat.send_json_to({"type": "feedback", "message_id": reply.id, "positive": False})
    assert (await chat.receive_json_from())["code"] == "not_found"
    assert not await database_sync_to_async(Feedback.objects.exists)()
    await chat.disconnect()


async def test_the_customer_rates_a_closed_conversation(customer: Any, agent_user: Any) -> None:
    chat, history = await open_chat(customer)
    await chat.send_json_to({"type": "satisfaction", "score": 5})
    assert (await chat.receive_json_from())["code"] == "not_closed"
    agent = await open_agent(agent_user)
    await agent.send_json_to({"type": "close", "conversation_id": history["conversation"]["id"]})
    assert (await receive_until(chat, "status"))[-1]["conversation"]["status"] == "closed"
    await chat.send_json_to({"type": "satisfaction", "score": 4})
    assert await chat.receive_json_from() == {"type": "satisfaction", "score": 4}
    conversation = await database_sync_to_async(Conversation.objects.get)(id=history["conversation"]["id"])
    assert conversation.satisfaction == 4
    await chat.disconnect()
    await agent.disconnect()


async def test_agent_only_data_never_reaches_the_customer_socket(customer: Any, agent_user: Any) -> None:
    conversation = await database_sync_to_async(Conversation.objects.create)(customer=customer)
    reply = await database_sync_to_async(Message.objects.create)(conversation=conversation, role="bot", text="Hi")
    chat, _ = await open_chat(customer)
    agent = await open_agent(agent_user)
    await agent.send_json_to({"type": "watch", "conversation_id": str(conversation.id)})
    await agent.receive_json_from()

    @sync_to_async
    def review_as_agent() -> None:
        client = Client()
        client.force_login(agent_user)
        json_headers = {"HTTP_ACCEPT": "application/json"}
        base = f"/agent/conversations/{conversation.id}/review"
        assert client.post(base, {"note": "SECRET-NOTE", "tags": "SECRET-TAG"}, **json_headers).status_code == 200
        assert (
            client.post(
                f"/agent/messages/{reply.id}/feedback", {"positive": "0", "reason": "rude"}, **json_headers
            ).status_code
            == 200
        )
        assert (
            client.post(
                f"/agent/messages/{reply.id}/correction", {"text": "SECRET-CORRECTION"}, **json_headers
            ).status_code
            == 200
        )

    await review_as_agent()
    reviews = await receive_until(agent, lambda f: f["type"] == "review" and "correction" in f)
    assert any(f.get("note") == "SECRET-NOTE" for f in reviews)  # the agents do hear of it
    # Even a stray agent-only frame published to the conversation's own group is held back.
    await events.publish(conversation.id, {"type": "review", "note": "SECRET-NOTE"})
    await events.publish(conversation.id, {"type": "typing", "who": "customer", "name": "SECRET-TYPING"})
    await events.publish(
        conversation.id,
        events.status_event(
            {"id": str(conversation.id), "status": "bot", "note": "SECRET-NOTE", "tags": ["SECRET-TAG"]}
        ),
    )
    leaked = await receive_until(chat, "status")
    assert "SECRET" not in repr(leaked)
    assert await chat.receive_nothing(timeout=0.3)
    await chat.disconnect()
    _, history = await open_chat(customer)
    assert "SECRET" not in repr(history)
    await agent.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "dance", "conversation_id": "x"}, "unknown_type"),
        ({"type": "takeover", "conversation_id": "not-a-uuid"}, "not_found"),
        ({"type": "takeover"}, "not_found"),
        ({"type": "hand_back", "conversation_id": "CONVERSATION"}, "not_with_agent"),
        ({"type": "message", "conversation_id": "CONVERSATION", "text": "hi"}, "not_with_agent"),
    ],
)
async def test_the_agent_socket_answers_bad_frames_with_errors(
    conversation: Conversation, agent_user: Any, frame: dict[str, Any], code: str
) -> None:
    agent = await open_agent(agent_user)
    if frame.get("conversation_id") == "CONVERSATION":
        frame["conversation_id"] = str(conversation.id)
    await agent.send_json_to(frame)
    answer = await agent.receive_json_from()
    assert answer["type"] == "error" and answer["code"] == code
    await agent.disconnect()


async def test_two_agents_cannot_hold_the_same_conversation(
    conversation: Conversation, agent_user: Any, second_agent: Any
) -> None:
    first, second = await open_agent(agent_user), await open_agent(second_agent)
    await first.send_json_to({"type": "takeover", "conversation_id": str(conversation.id)})
    await receive_until(first, "inbox")
    await second.send_json_to({"type": "takeover", "conversation_id": str(conversation.id)})
    error = (await receive_until(second, "error"))[-1]
    assert error["code"] == "held_by_another_agent" and "Dana" in error["detail"]
    assert (await refreshed(conversation)).agent_id == agent_user.id
    await first.disconnect()
    await second.disconnect()


async def test_starting_a_new_conversation_shows_the_old_one_closed_to_agents(customer: Any, agent_user: Any) -> None:
    chat, history = await open_chat(customer)
    agent = await open_agent(agent_user)
    await chat.send_json_to({"type": "new_conversation"})
    fresh = (await receive_until(chat, "history"))[-1]
    assert fresh["conversation"]["id"] != history["conversation"]["id"]
    item = (await receive_until(agent, "inbox"))[-1]
    assert item["conversation"]["id"] == history["conversation"]["id"]
    assert item["conversation"]["status"] == "closed"
    await chat.disconnect()
    await agent.disconnect()


async def test_a_reply_the_worker_refuses_after_a_takeover_is_shown_cancelled(customer: Any, agent_user: Any) -> None:
    chat, history = await open_chat(customer)
    conversation = await database_sync_to_async(Conversation.objects.get)(id=history["conversation"]["id"])
    reply = await database_sync_to_async(Message.objects.create)(
        conversation=conversation, role="bot", status="pending"
    )
    await database_sync_to_async(Conversation.objects.filter(id=conversation.id).update)(status="agent")
    assert await database_sync_to_async(worker_services.reply_claim)(message_id=reply.id) is None
    done = (await receive_until(chat, "done"))[-1]
    assert (done["message_id"], done["status"]) == (reply.id, "cancelled")
    await chat.disconnect()


async def test_asking_twice_for_a_person_alerts_the_agents_once(customer: Any, agent_user: Any) -> None:
    agent = await open_agent(agent_user)
    chat, _ = await open_chat(customer)
    await chat.send_json_to({"type": "handoff"})
    await receive_until(chat, "status")
    await receive_until(agent, "activity")  # the inbox row, then "asked for a person" for the thread
    await chat.send_json_to({"type": "handoff"})
    again = (await receive_until(chat, "status"))[-1]
    assert again["conversation"]["status"] == "waiting"
    assert await agent.receive_nothing(timeout=0.3)
    await chat.disconnect()
    await agent.disconnect()


async def test_a_handoff_phrase_during_a_reply_cancels_it_on_the_page(customer: Any) -> None:
    chat, _ = await open_chat(customer)
    await chat.send_json_to({"type": "message", "text": "Hello", "client_id": "c1"})
    pending = (await receive_until(chat, lambda f: f["type"] == "message" and f["message"]["role"] == "bot"))[-1]
    await chat.send_json_to({"type": "message", "text": "No, get me a human", "client_id": "c2"})
    frames = await receive_until(chat, "status")
    assert {
        "type": "done",
        "message_id": pending["message"]["id"],
        "text": "",
        "status": "cancelled",
        "error": "",
        "error_code": "",
    } in frames
    assert frames[-1]["conversation"]["status"] == "waiting"
    await chat.disconnect()
