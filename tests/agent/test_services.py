"""Handoff, takeover and review services, without sockets."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from conversations.chat import services as chat_services
from conversations.errors import ChatError
from conversations.models import Conversation, Feedback, Message
from conversations.worker import services as worker_services
from conversations.workspace import services as workspace_services

from .conftest import add_messages

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clean_redis")]


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ("I want a human", True),
        ("Can I talk to a person, please?", True),
        ("AGENT!", True),
        ("real   person", True),
        ("Is this humane?", False),
        ("My agents are fine", False),
        ("Where is my parcel?", False),
    ],
)
def test_it_recognises_the_handoff_phrases_as_whole_words(text: str, wanted: bool) -> None:
    assert chat_services.wants_person(text) is wanted


@override_settings(HANDOFF_PHRASES=["speak to Bob"])
def test_the_handoff_phrases_come_from_settings() -> None:
    assert chat_services.wants_person("please let me speak to bob")
    assert not chat_services.wants_person("I want a human")


def test_a_handoff_phrase_moves_the_conversation_to_waiting_without_a_bot_reply(conversation: Conversation) -> None:
    result = chat_services.message_send(conversation=conversation, text="I need a human please")
    conversation.refresh_from_db()
    assert result.handoff and result.bot_message is None
    assert conversation.status == Conversation.Status.WAITING
    assert list(conversation.messages.values_list("role", flat=True)) == ["customer"]


def test_a_handoff_phrase_cancels_the_reply_in_flight(conversation: Conversation) -> None:
    first = chat_services.message_send(conversation=conversation, text="Hello")
    chat_services.message_send(conversation=conversation, text="agent")
    first.bot_message.refresh_from_db()
    assert first.bot_message.status == Message.Status.CANCELLED


@pytest.mark.parametrize("status", ["waiting", "agent"])
def test_the_bot_stays_silent_while_a_person_is_wanted_or_present(conversation: Conversation, status: str) -> None:
    Conversation.objects.filter(id=conversation.id).update(status=status)
    result = chat_services.message_send(conversation=conversation, text="Hello?")
    assert result.bot_message is None
    assert not conversation.messages.filter(role="bot").exists()


def test_a_takeover_cancels_a_pending_reply_and_names_the_agent(conversation: Conversation, agent_user: Any) -> None:
    reply = chat_services.message_send(conversation=conversation, text="Hello").bot_message
    transition = workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    assert transition.stopped is not None and transition.stopped.id == reply.id
    assert transition.stopped.status == Message.Status.CANCELLED
    assert transition.conversation.status == Conversation.Status.AGENT
    assert transition.conversation.agent == agent_user


def test_a_takeover_asks_the_worker_to_stop_a_streaming_reply(
    conversation: Conversation, agent_user: Any, clean_redis: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from conversations import dispatch

    reply = Message.objects.create(conversation=conversation, role="bot", status="streaming", text="Partial")
    listener = clean_redis.pubsub()
    listener.subscribe(dispatch.key(dispatch.CANCEL_CHANNEL))
    listener.get_message(timeout=1)  # the subscription confirmation
    with django_capture_on_commit_callbacks(execute=True):
        workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    cancel = listener.get_message(timeout=2)
    assert cancel is not None and cancel["data"] == str(reply.id)


def test_the_worker_does_not_claim_a_reply_once_a_person_holds_the_conversation(
    conversation: Conversation, agent_user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    reply = Message.objects.create(conversation=conversation, role="bot", status="pending")
    Conversation.objects.filter(id=conversation.id).update(status="agent", agent=agent_user)
    with django_capture_on_commit_callbacks() as published:
        assert worker_services.reply_claim(message_id=reply.id) is None
    reply.refresh_from_db()
    assert reply.status == Message.Status.CANCELLED
    assert len(published) == 1  # the customer's page hears the reply was cancelled


def test_a_second_agent_cannot_take_a_held_conversation(
    conversation: Conversation, agent_user: Any, second_agent: Any
) -> None:
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    with pytest.raises(ChatError) as refused:
        workspace_services.conversation_takeover(conversation=conversation, agent=second_agent)
    assert refused.value.code == "held_by_another_agent"


def test_only_the_holder_writes_to_the_customer(conversation: Conversation, agent_user: Any, second_agent: Any) -> None:
    with pytest.raises(ChatError) as refused:
        workspace_services.agent_message_send(conversation=conversation, agent=agent_user, text="Hi")
    assert refused.value.code == "not_with_agent"
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    with pytest.raises(ChatError):
        workspace_services.agent_message_send(conversation=conversation, agent=second_agent, text="Hi")
    sent = workspace_services.agent_message_send(
        conversation=conversation, agent=agent_user, text="Hi, Dana here", client_id="a1"
    )
    assert sent.customer_message.role == "agent" and sent.customer_message.author == agent_user
    again = workspace_services.agent_message_send(
        conversation=conversation, agent=agent_user, text="Hi, Dana here", client_id="a1"
    )
    assert not again.created and again.customer_message.id == sent.customer_message.id


def test_handing_back_lets_the_bot_answer_the_next_message(conversation: Conversation, agent_user: Any) -> None:
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    workspace_services.conversation_hand_back(conversation=conversation, agent=agent_user)
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.BOT and conversation.agent is None
    assert chat_services.message_send(conversation=conversation, text="Thanks").bot_message is not None


def test_a_closed_conversation_refuses_takeover_and_handoff(conversation: Conversation, agent_user: Any) -> None:
    workspace_services.conversation_close(conversation=conversation, agent=agent_user)
    for attempt in (
        lambda: workspace_services.conversation_takeover(conversation=conversation, agent=agent_user),
        lambda: chat_services.handoff_request(conversation=conversation),
    ):
        with pytest.raises(ChatError) as refused:
            attempt()
        assert refused.value.code == "conversation_closed"


def test_the_customer_can_change_their_rating(answered: Conversation) -> None:
    reply = answered.messages.get(role="bot")
    chat_services.feedback_set(message=reply, source="customer", positive=True)
    chat_services.feedback_set(message=reply, source="customer", positive=False, reason="wrong", comment="Not tomorrow")
    feedback = Feedback.objects.get(message=reply)
    assert (feedback.positive, feedback.reason, feedback.comment) == (False, "wrong", "Not tomorrow")
    chat_services.feedback_set(message=reply, source="customer", positive=None)
    assert not Feedback.objects.filter(message=reply).exists()


def test_customer_and_agent_ratings_are_kept_apart(answered: Conversation, agent_user: Any) -> None:
    reply = answered.messages.get(role="bot")
    chat_services.feedback_set(message=reply, source="customer", positive=True)
    chat_services.feedback_set(message=reply, source="agent", positive=False, reason="incomplete", author=agent_user)
    assert Feedback.objects.filter(message=reply).count() == 2


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"positive": "yes"}, "invalid_feedback"),
        ({"positive": False, "reason": "boring"}, "invalid_reason"),
        ({"positive": False, "comment": "x" * 1001}, "invalid_comment"),
    ],
)
def test_it_rejects_malformed_feedback(answered: Conversation, kwargs: dict[str, Any], code: str) -> None:
    with pytest.raises(ChatError) as refused:
        chat_services.feedback_set(message=answered.messages.get(role="bot"), source="customer", **kwargs)
    assert refused.value.code == code


def test_only_bot_replies_are_rated_or_corrected(answered: Conversation, agent_user: Any) -> None:
    question = answered.messages.get(role="customer")
    with pytest.raises(ChatError):
        chat_services.feedback_set(message=question, source="customer", positive=True)
    with pytest.raises(ChatError):
        workspace_services.correction_set(message=question, text="x", author=agent_user)


def test_a_correction_is_replaced_and_removed(answered: Conversation, agent_user: Any) -> None:
    reply = answered.messages.get(role="bot")
    workspace_services.correction_set(message=reply, text="It shipped today.", author=agent_user)
    workspace_services.correction_set(message=reply, text="It shipped yesterday.", author=agent_user)
    reply.refresh_from_db()
    assert reply.correction.text == "It shipped yesterday."
    workspace_services.correction_set(message=reply, text="  ", author=agent_user)
    assert not type(reply.correction).objects.filter(message=reply).exists()


def test_review_updates_only_the_fields_given(conversation: Conversation) -> None:
    workspace_services.conversation_review(
        conversation=conversation, tags="billing, refund,billing, ", note="Call back"
    )
    workspace_services.conversation_review(conversation=conversation, reviewed=True)
    conversation.refresh_from_db()
    assert conversation.tags == ["billing", "refund"]
    assert conversation.note == "Call back" and conversation.reviewed and not conversation.exclude_from_training


def test_satisfaction_is_asked_only_once_closed(conversation: Conversation, agent_user: Any) -> None:
    with pytest.raises(ChatError) as refused:
        chat_services.satisfaction_set(conversation=conversation, score=5)
    assert refused.value.code == "not_closed"
    workspace_services.conversation_close(conversation=conversation, agent=agent_user)
    for bad in (0, 6, "5", True, 2.5):
        with pytest.raises(ChatError):
            chat_services.satisfaction_set(conversation=conversation, score=bad)
    chat_services.satisfaction_set(conversation=conversation, score=4)
    chat_services.satisfaction_set(conversation=conversation, score=5)
    conversation.refresh_from_db()
    assert conversation.satisfaction == 5


def test_messages_to_a_waiting_conversation_are_stored(conversation: Conversation) -> None:
    chat_services.handoff_request(conversation=conversation)
    add_messages(conversation)
    chat_services.message_send(conversation=conversation, text="Still there?")
    assert conversation.messages.filter(role="customer").count() == 1


def test_a_waiting_conversation_can_be_handed_straight_back_to_the_bot(
    conversation: Conversation, agent_user: Any
) -> None:
    chat_services.handoff_request(conversation=conversation)
    workspace_services.conversation_hand_back(conversation=conversation, agent=agent_user)
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.BOT
