"""Live use per entry from real rows: grounded replies, the thumbs on them, handoffs after them;
and the page's tabs and search."""

from __future__ import annotations

from typing import Any

import pytest

from conversations.knowledge import selectors, services
from conversations.knowledge.models import KnowledgeEntry
from conversations.models import Conversation, Customer, Feedback, Message

pytestmark = pytest.mark.django_db


@pytest.fixture
def wrapping() -> KnowledgeEntry:
    return services.entry_create(question="How much is wrapping?", answer="$4.50.", alternatives=["Wrap price?"])


@pytest.fixture
def hours() -> KnowledgeEntry:
    return services.entry_create(question="When are you open?", answer="9 to 5.")


def grounded(conversation: Conversation, *entries: KnowledgeEntry, text: str = "An answer.") -> Message:
    Message.objects.create(conversation=conversation, role="customer", text="A question?")
    grounding = [{"entry": e.id, "score": 0.7 - i / 10} for i, e in enumerate(entries)]
    return Message.objects.create(conversation=conversation, role="bot", text=text, grounding=grounding)


def rate(message: Message, source: str, positive: bool) -> None:
    Feedback.objects.create(message=message, source=source, positive=positive)


def new_conversation(customer: Customer, **fields: Any) -> Conversation:
    return Conversation.objects.create(customer=customer, **fields)


def test_it_counts_the_replies_grounded_on_each_entry(
    customer: Customer, wrapping: KnowledgeEntry, hours: KnowledgeEntry
) -> None:
    first, second = new_conversation(customer), new_conversation(customer)
    grounded(first, wrapping, hours)
    grounded(first, wrapping)
    grounded(second, hours)
    Message.objects.create(conversation=second, role="bot", text="Not grounded.")
    usage = selectors.entries_usage([wrapping.id, hours.id])
    assert (usage[wrapping.id].replies, usage[hours.id].replies) == (2, 2)


def test_it_counts_customer_thumbs_and_agent_ratings_apart(
    customer: Customer, wrapping: KnowledgeEntry, hours: KnowledgeEntry
) -> None:
    conversation = new_conversation(customer)
    liked, disliked, both = (
        grounded(conversation, wrapping),
        grounded(conversation, wrapping),
        grounded(conversation, wrapping, hours),
    )
    rate(liked, "customer", True)
    rate(disliked, "customer", False)
    rate(both, "customer", True)
    rate(both, "agent", False)
    ungrounded = Message.objects.create(conversation=conversation, role="bot", text="x")
    rate(ungrounded, "customer", False)  # no entry's business
    usage = selectors.entries_usage([wrapping.id, hours.id])
    w, h = usage[wrapping.id], usage[hours.id]
    assert (w.up, w.down, w.agent_good, w.agent_bad) == (2, 1, 0, 1)
    assert (h.up, h.down, h.agent_good, h.agent_bad) == (1, 0, 0, 1)


def test_a_handoff_counts_for_the_last_grounded_reply_before_it(
    customer: Customer, wrapping: KnowledgeEntry, hours: KnowledgeEntry
) -> None:
    waiting = new_conversation(customer, status=Conversation.Status.WAITING)
    grounded(waiting, hours)  # answered again after this one: not what the handoff followed
    grounded(waiting, wrapping)
    Message.objects.create(conversation=waiting, role="customer", text="I want a person")
    usage = selectors.entries_usage([wrapping.id, hours.id])
    assert (usage[wrapping.id].handoffs, usage[hours.id].handoffs) == (1, 0)


def test_an_agent_who_wrote_after_the_reply_is_a_handoff_even_once_closed(
    customer: Customer, agent_user: Any, wrapping: KnowledgeEntry
) -> None:
    closed = new_conversation(customer, status=Conversation.Status.CLOSED)
    grounded(closed, wrapping)
    Message.objects.create(conversation=closed, role="agent", text="Let me help.", author=agent_user)
    assert selectors.entries_usage([wrapping.id])[wrapping.id].handoffs == 1


def test_a_conversation_that_stayed_with_the_bot_has_no_handoff(customer: Customer, wrapping: KnowledgeEntry) -> None:
    grounded(new_conversation(customer), wrapping)
    grounded(new_conversation(customer, status=Conversation.Status.CLOSED), wrapping)
    usage = selectors.entries_usage([wrapping.id])[wrapping.id]
    assert (usage.replies, usage.handoffs) == (2, 0)


def test_an_entry_never_used_has_zeros(wrapping: KnowledgeEntry) -> None:
    assert selectors.entries_usage([wrapping.id]) == {wrapping.id: selectors.Usage()}


def test_usage_takes_a_fixed_number_of_queries(
    customer: Customer, wrapping: KnowledgeEntry, django_assert_max_num_queries: Any
) -> None:
    entries = [wrapping, *(services.entry_create(question=f"Q{i}?", answer=f"A{i}.") for i in range(10))]
    for entry in entries:
        conversation = new_conversation(customer, status=Conversation.Status.WAITING)
        rate(grounded(conversation, entry), "customer", True)
    with django_assert_max_num_queries(3):
        usage = selectors.entries_usage([e.id for e in entries])
    assert all((u.replies, u.up, u.handoffs) == (1, 1, 1) for u in usage.values())


def test_the_page_shows_each_entrys_live_use(
    customer: Customer, agent_user: Any, wrapping: KnowledgeEntry, django_assert_max_num_queries: Any
) -> None:
    from tests.agent.conftest import user_client

    reply = grounded(new_conversation(customer, status=Conversation.Status.WAITING), wrapping)
    rate(reply, "customer", False)
    client = user_client(agent_user)
    page = client.get("/agent/knowledge/").content.decode()
    assert "grounded 1 reply" in page and "👎 1" in page and "1 handoff after" in page
    for i in range(5):
        services.entry_create(question=f"Q{i}?", answer=f"A{i}.")
    with django_assert_max_num_queries(12):  # the same few queries for 6 entries as for 1
        assert client.get("/agent/knowledge/").status_code == 200
