"""What each change of hands records: an event with who did it (for the agents' threads and the
reports), and the times the inbox sorts and the reports measure by (waiting since, closed at,
last activity)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from conversations.chat import services as chat_services
from conversations.models import Conversation, ConversationEvent
from conversations.workspace import services as workspace_services

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clean_redis")]


def kinds(conversation: Conversation) -> list[tuple[str, str | None]]:
    return [(e.kind, e.actor.username if e.actor else None) for e in conversation.events.select_related("actor")]


def test_each_change_of_hands_is_recorded_with_who_made_it(conversation: Conversation, agent_user: Any) -> None:
    chat_services.message_send(conversation=conversation, text="I want a human")
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.WAITING and conversation.waiting_since is not None
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    conversation.refresh_from_db()
    assert conversation.waiting_since is None
    workspace_services.conversation_hand_back(conversation=conversation, agent=agent_user)
    workspace_services.conversation_close(conversation=conversation, agent=agent_user)
    conversation.refresh_from_db()
    assert kinds(conversation) == [
        ("handoff_requested", None),
        ("taken_over", "dana"),
        ("assigned", "dana"),  # a takeover assigns the taker (tests/agent/test_assignment.py)
        ("handed_back", "dana"),
        ("closed", "dana"),
    ]
    assert conversation.closed_at is not None and conversation.closed_at >= conversation.created_at


def test_a_second_takeover_by_the_holder_records_nothing_more(conversation: Conversation, agent_user: Any) -> None:
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    assert kinds(conversation) == [("taken_over", "dana"), ("assigned", "dana")]


def test_a_new_conversation_records_the_old_one_closed_by_nobody(customer: Any, conversation: Conversation) -> None:
    chat_services.conversation_start(customer=customer)
    assert kinds(conversation) == [("closed", None)]
    conversation.refresh_from_db()
    assert conversation.closed_at is not None


def test_last_activity_follows_what_the_customer_and_the_agent_write(
    conversation: Conversation, agent_user: Any
) -> None:
    old = timezone.now() - timedelta(days=3)
    Conversation.objects.filter(id=conversation.id).update(last_activity_at=old)
    sent = chat_services.message_send(conversation=conversation, text="Back again").customer_message
    conversation.refresh_from_db()
    assert conversation.last_activity_at == sent.created_at
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    reply = workspace_services.agent_message_send(
        conversation=conversation, agent=agent_user, text="Hi"
    ).customer_message
    conversation.refresh_from_db()
    assert conversation.last_activity_at == reply.created_at


def test_review_changes_do_not_count_as_activity(conversation: Conversation) -> None:
    old = timezone.now() - timedelta(days=3)
    Conversation.objects.filter(id=conversation.id).update(last_activity_at=old)
    conversation.refresh_from_db()
    workspace_services.conversation_review(conversation=conversation, tags="billing", reviewed=True)
    conversation.refresh_from_db()
    assert conversation.last_activity_at == old
    assert ConversationEvent.objects.count() == 0
