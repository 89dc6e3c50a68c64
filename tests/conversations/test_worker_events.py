"""Who hears of the worker's writes. Its deltas and done frames go out from the worker after each
save (tests/conversations/test_worker.py); a claim refused by the rule tells the customer here."""

from __future__ import annotations

from datetime import datetime

import pytest
from django.utils import timezone

from conversations.chat import services as chat_services
from conversations.models import Conversation, Message
from conversations.worker import services as worker_services
from tests.capture import CaptureEvents

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clean_redis")]


def pending_reply(conversation: Conversation) -> Message:
    reply = chat_services.message_send(conversation=conversation, text="hi").bot_message
    assert reply is not None
    return reply


def test_a_claim_for_a_conversation_a_person_holds_tells_its_customer_the_reply_is_cancelled(
    conversation: Conversation, capture_events: CaptureEvents
) -> None:
    reply = pending_reply(conversation)
    Conversation.objects.filter(id=conversation.id).update(status=Conversation.Status.AGENT)
    with capture_events() as sent:
        assert worker_services.reply_claim(message_id=reply.id) is None
    assert sent.frames() == [("conversation", "done")]
    assert sent.to_conversation()[0]["status"] == Message.Status.CANCELLED


def test_a_claim_progress_and_finish_send_nothing_themselves(
    conversation: Conversation, capture_events: CaptureEvents
) -> None:
    reply = pending_reply(conversation)
    now: datetime = timezone.now()
    with capture_events() as sent:
        worker_services.reply_claim(message_id=reply.id, consumer="w")
        worker_services.reply_progress(updates={reply.id: ("Hel", 1, now)})
        worker_services.reply_finish(message_id=reply.id, text="Hello", finish_reason="stop", token_count=2)
    assert sent.frames() == []
