from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from conversations import dispatch
from conversations.chat import services as chat_services
from conversations.errors import ChatError
from conversations.models import Conversation, Message
from conversations.worker import services as worker_services

pytestmark = pytest.mark.django_db


def queued_ids(redis_client: Any) -> list[int]:
    entries = redis_client.xrange(dispatch.key(dispatch.GENERATE_STREAM))
    return [int(fields["message_id"]) for _, fields in entries]


def test_it_stores_the_message_and_a_pending_reply_then_requests_generation(
    conversation: Conversation, clean_redis: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        result = chat_services.message_send(conversation=conversation, text="  Where is my order?  ", client_id="c-1")
    assert result.created
    assert result.customer_message.text == "Where is my order?"
    assert result.bot_message is not None and result.bot_message.status == Message.Status.PENDING
    assert queued_ids(clean_redis) == [result.bot_message.id]


def test_it_does_not_store_a_resend_twice(conversation: Conversation, clean_redis: Any) -> None:
    first = chat_services.message_send(conversation=conversation, text="hello", client_id="same")
    again = chat_services.message_send(conversation=conversation, text="hello", client_id="same")
    assert not again.created
    assert again.customer_message.id == first.customer_message.id
    assert conversation.messages.filter(role="customer").count() == 1


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "empty_text"),
        ("   ", "empty_text"),
        (None, "empty_text"),
        (42, "empty_text"),
        ("x" * (settings.CHAT_MAX_MESSAGE_CHARS + 1), "text_too_long"),
    ],
)
def test_it_rejects_bad_text_and_stores_nothing(conversation: Conversation, text: Any, code: str) -> None:
    with pytest.raises(ChatError) as error:
        chat_services.message_send(conversation=conversation, text=text)
    assert error.value.code == code
    assert not conversation.messages.exists()


def test_it_rejects_a_malformed_client_id(conversation: Conversation) -> None:
    with pytest.raises(ChatError, match="client_id"):
        chat_services.message_send(conversation=conversation, text="hi", client_id="x" * 65)
    assert not conversation.messages.exists()


@override_settings(CHAT_RATE_LIMIT_MESSAGES=3, CHAT_RATE_LIMIT_WINDOW_S=60)
def test_it_rate_limits_a_customer_across_conversations(customer: Any, clean_redis: Any) -> None:
    first = Conversation.objects.create(customer=customer)
    for i in range(3):
        chat_services.message_send(conversation=first, text=f"m{i}")
        Message.objects.filter(role="bot").update(status="complete")
    second = Conversation.objects.create(customer=customer)
    with pytest.raises(ChatError) as error:
        chat_services.message_send(conversation=second, text="one more")
    assert error.value.code == "rate_limited"
    assert not second.messages.exists()


def test_it_refuses_a_second_question_while_the_bot_is_answering(conversation: Conversation, clean_redis: Any) -> None:
    chat_services.message_send(conversation=conversation, text="first")
    with pytest.raises(ChatError) as error:
        chat_services.message_send(conversation=conversation, text="second")
    assert error.value.code == "reply_in_progress"


def test_the_bot_stays_silent_when_the_conversation_is_not_with_it(conversation: Conversation) -> None:
    Conversation.objects.filter(id=conversation.id).update(status=Conversation.Status.AGENT)
    result = chat_services.message_send(conversation=conversation, text="hello person")
    assert result.created and result.bot_message is None


def test_it_refuses_messages_in_a_closed_conversation(conversation: Conversation) -> None:
    Conversation.objects.filter(id=conversation.id).update(status=Conversation.Status.CLOSED)
    with pytest.raises(ChatError, match="closed"):
        chat_services.message_send(conversation=conversation, text="hello?")


def test_stop_cancels_a_pending_reply_at_once(conversation: Conversation, clean_redis: Any) -> None:
    reply = chat_services.message_send(conversation=conversation, text="hi").bot_message
    assert reply is not None
    stopped = chat_services.reply_stop(message=reply)
    assert stopped.status == Message.Status.CANCELLED
    assert worker_services.reply_claim(message_id=reply.id) is None  # the worker will skip it


def test_claiming_a_reply_found_streaming_starts_it_again(conversation: Conversation, clean_redis: Any) -> None:
    reply = chat_services.message_send(conversation=conversation, text="hi").bot_message
    assert reply is not None
    worker_services.reply_claim(message_id=reply.id)
    Message.objects.filter(id=reply.id).update(text="half a rep", token_count=3)
    reclaimed = worker_services.reply_claim(message_id=reply.id)
    assert reclaimed is not None
    assert (reclaimed.status, reclaimed.text, reclaimed.token_count) == ("streaming", "", 0)


def test_retry_queues_a_new_reply_after_a_failure(conversation: Conversation, clean_redis: Any) -> None:
    reply = chat_services.message_send(conversation=conversation, text="hi").bot_message
    assert reply is not None
    worker_services.reply_finish(message_id=reply.id, text="", finish_reason="error", token_count=0, error="boom")
    retried = chat_services.reply_retry(conversation=conversation)
    assert retried.id != reply.id and retried.status == Message.Status.PENDING


def test_retry_refuses_when_the_last_reply_is_fine(conversation: Conversation, clean_redis: Any) -> None:
    reply = chat_services.message_send(conversation=conversation, text="hi").bot_message
    assert reply is not None
    worker_services.reply_finish(message_id=reply.id, text="Hello", finish_reason="stop", token_count=2)
    with pytest.raises(ChatError, match="retried"):
        chat_services.reply_retry(conversation=conversation)


def test_a_new_conversation_closes_the_open_one(customer: Any, conversation: Conversation) -> None:
    fresh = chat_services.conversation_start(customer=customer)
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.CLOSED
    assert chat_services.conversation_current(customer=customer) == fresh
