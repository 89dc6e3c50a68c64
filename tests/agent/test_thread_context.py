"""The customer beside the transcript: who they are, where they chat from, their other
conversations and the satisfaction they gave."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from conversations.models import Conversation, Customer, Message
from conversations.workspace import thread

from .conftest import add_messages

pytestmark = pytest.mark.django_db


def started(customer: Customer, minutes_ago: int, **fields: Any) -> Conversation:
    conversation = Conversation.objects.create(customer=customer, **fields)
    Conversation.objects.filter(id=conversation.id).update(created_at=timezone.now() - timedelta(minutes=minutes_ago))
    conversation.refresh_from_db()
    return conversation


def test_it_lists_the_customers_other_conversations_newest_first_with_their_last_words(
    customer: Customer, second_customer: Customer
) -> None:
    customer.email = "alice@example.com"
    customer.save()
    old = started(customer, 60, status="closed", satisfaction=2)
    add_messages(old, ("customer", "first   question\nhere"), ("bot", "first answer"))
    Message.objects.create(conversation=old, role="system", text="Dana closed the conversation.")
    newer = started(customer, 30, satisfaction=5)
    add_messages(newer, ("customer", "second question"))
    current = started(customer, 1, satisfaction=4)
    started(second_customer, 5, satisfaction=1)  # someone else's: not theirs, not in the average
    context = thread.customer_context(current)
    assert (context.name, context.email) == ("Alice", "alice@example.com")
    assert [(o.conversation.id, o.last_text) for o in context.others] == [
        (newer.id, "second question"),
        (old.id, "first answer"),  # the last words said, not the system line
    ]
    assert context.others_more == 0
    assert context.satisfaction == 4
    assert (context.satisfaction_average, context.satisfaction_count) == (3.7, 3)


def test_it_shows_ten_and_counts_the_rest(customer: Customer) -> None:
    others = [started(customer, 100 - i) for i in range(13)]
    current = started(customer, 0)
    context = thread.customer_context(current)
    assert [o.conversation.id for o in context.others] == [c.id for c in reversed(others)][:10]
    assert context.others_more == 3


def test_a_first_conversation_without_ratings_has_no_average(conversation: Conversation) -> None:
    context = thread.customer_context(conversation)
    assert context.others == [] and context.others_more == 0
    assert (context.satisfaction, context.satisfaction_average, context.satisfaction_count) == (None, None, 0)


def test_the_transcript_page_shows_the_customer_beside_it(agent_client: Client, customer: Customer) -> None:
    customer.email = "alice@example.com"
    customer.save()
    old = started(customer, 60, satisfaction=5)
    add_messages(old, ("customer", "<script>window.x=1</script> my old order"))
    current = started(customer, 1, page_url="https://shop.example.com/cart", user_agent="Mozilla/5.0 Firefox/128.0")
    page = agent_client.get(f"/agent/conversations/{current.id}/").content.decode()
    assert 'id="customer-email"' in page and "alice@example.com" in page
    assert f'href="/agent/conversations/{old.id}/"' in page
    assert "&lt;script&gt;window.x=1&lt;/script&gt; my old order" in page
    assert 'id="chat-page-url"' in page and "https://shop.example.com/cart" in page
    assert "average 5.0 over 1 conversation" in page


def test_an_unknown_customer_is_said_to_be_so(agent_client: Client) -> None:
    anonymous = Customer.objects.create()
    conversation = Conversation.objects.create(customer=anonymous)
    page = agent_client.get(f"/agent/conversations/{conversation.id}/").content.decode()
    assert 'id="customer-name">Not given<' in page
    assert 'id="customer-email"' not in page
    assert "this is their first conversation" in page
