"""Who hears of each of the customer's writes: the conversation's group (its customer and the
agents watching it) or the agents' group, and nothing before the write commits."""

from __future__ import annotations

from typing import Any

import pytest

from conversations.chat import services as chat_services
from conversations.errors import ChatError
from conversations.models import Conversation, Message
from conversations.worker import services as worker_services
from tests.capture import CaptureEvents

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clean_redis")]


def test_a_message_reaches_its_conversation_the_inbox_and_says_no_worker_is_up(
    conversation: Conversation, capture_events: CaptureEvents
) -> None:
    with capture_events() as sent:
        result = chat_services.message_send(conversation=conversation, text="Where is my order?")
    assert sent.frames() == [
        ("conversation", "message"),
        ("agents", "inbox"),
        ("conversation", "message"),
        ("conversation", "notice"),
    ]
    customer_frame, reply_frame, notice = sent.to_conversation()
    assert customer_frame["message"]["id"] == result.customer_message.id
    assert reply_frame["message"]["status"] == Message.Status.PENDING
    assert notice["code"] == "worker_offline"
    assert sent.groups() == {f"conversation.{conversation.id}", "agents"}


def test_a_resend_sends_nothing(conversation: Conversation, capture_events: CaptureEvents) -> None:
    chat_services.message_send(conversation=conversation, text="hello", client_id="same")
    with capture_events() as sent:
        again = chat_services.message_send(conversation=conversation, text="hello", client_id="same")
    assert not again.created
    assert sent.frames() == []


def test_a_refused_message_sends_nothing(conversation: Conversation, capture_events: CaptureEvents) -> None:
    with capture_events() as sent, pytest.raises(ChatError):
        chat_services.message_send(conversation=conversation, text="   ")
    assert sent.frames() == []


def test_asking_for_a_person_in_a_message_stops_the_reply_and_alerts_the_agents(
    conversation: Conversation, capture_events: CaptureEvents
) -> None:
    pending = chat_services.message_send(conversation=conversation, text="Hello").bot_message
    assert pending is not None
    with capture_events() as sent:
        chat_services.message_send(conversation=conversation, text="I want a human")
    assert sent.frames() == [
        ("conversation", "done"),
        ("conversation", "message"),
        ("conversation", "status"),
        ("agents", "inbox"),
        ("agents", "activity"),
    ]
    done, _, status = sent.to_conversation()
    assert (done["message_id"], done["status"]) == (pending.id, Message.Status.CANCELLED)
    assert status["conversation"]["status"] == Conversation.Status.WAITING
    inbox, activity = sent.to_agents()
    assert inbox["alert"] is True
    assert (activity["event"]["kind"], activity["event"]["actor"]) == ("handoff_requested", "")


def test_stopping_a_pending_reply_tells_its_conversation_only(
    conversation: Conversation, capture_events: CaptureEvents
) -> None:
    reply = chat_services.message_send(conversation=conversation, text="hi").bot_message
    assert reply is not None
    with capture_events() as sent:
        chat_services.reply_stop(message=reply)
    assert sent.frames() == [("conversation", "done")]
    assert sent.to_conversation()[0]["status"] == Message.Status.CANCELLED


def test_stopping_a_streaming_reply_leaves_its_done_to_the_worker(
    conversation: Conversation, capture_events: CaptureEvents
) -> None:
    reply = chat_services.message_send(conversation=conversation, text="hi").bot_message
    assert reply is not None
    worker_services.reply_claim(message_id=reply.id)
    with capture_events() as sent:
        chat_services.reply_stop(message=reply)
    assert sent.frames() == []


def test_a_retry_sends_the_new_pending_reply_to_its_conversation(
    conversation: Conversation, capture_events: CaptureEvents
) -> None:
    reply = chat_services.message_send(conversation=conversation, text="hi").bot_message
    assert reply is not None
    worker_services.reply_finish(message_id=reply.id, text="", finish_reason="error", token_count=0)
    with capture_events() as sent:
        retried = chat_services.reply_retry(conversation=conversation)
    assert sent.frames() == [("conversation", "message")]
    assert sent.to_conversation()[0]["message"]["id"] == retried.id


def test_a_handoff_request_tells_the_conversation_and_alerts_the_agents(
    conversation: Conversation, capture_events: CaptureEvents
) -> None:
    with capture_events() as sent:
        chat_services.handoff_request(conversation=conversation)
    assert sent.frames() == [("conversation", "status"), ("agents", "inbox"), ("agents", "activity")]
    assert sent.to_agents()[0]["alert"] is True


def test_a_second_handoff_request_sends_nothing(conversation: Conversation, capture_events: CaptureEvents) -> None:
    chat_services.handoff_request(conversation=conversation)
    with capture_events() as sent:
        transition = chat_services.handoff_request(conversation=conversation)
    assert not transition.changed
    assert sent.frames() == []


def test_a_new_conversation_shows_the_old_one_closed(
    customer: Any, conversation: Conversation, capture_events: CaptureEvents
) -> None:
    with capture_events() as sent:
        chat_services.conversation_start(customer=customer)
    assert sent.frames() == [("conversation", "status"), ("agents", "inbox"), ("agents", "activity")]
    assert sent.groups() == {f"conversation.{conversation.id}", "agents"}
    assert sent.to_agents()[0]["conversation"]["status"] == Conversation.Status.CLOSED


@pytest.mark.parametrize("positive", [True, False, None])
def test_a_customers_rating_reaches_the_agents_only(
    bot_reply: Message, capture_events: CaptureEvents, positive: bool | None
) -> None:
    with capture_events() as sent:
        chat_services.feedback_set(message=bot_reply, source="customer", positive=positive)
    assert sent.frames() == [("agents", "review"), ("agents", "inbox")]
    review = sent.to_agents()[0]
    assert review["message_id"] == bot_reply.id
    assert (review["customer_feedback"] or {}).get("positive") == positive


def test_a_satisfaction_score_reaches_the_agents_only(
    conversation: Conversation, capture_events: CaptureEvents
) -> None:
    Conversation.objects.filter(id=conversation.id).update(status=Conversation.Status.CLOSED)
    with capture_events() as sent:
        chat_services.satisfaction_set(conversation=conversation, score=4)
    assert sent.frames() == [("agents", "review")]
    assert sent.to_agents()[0]["satisfaction"] == 4
