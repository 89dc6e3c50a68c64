"""What a customer reads of the knowledge a reply rests on: nothing unless the admin turns
KNOWLEDGE_SHOW_SOURCES on, then "Source: <question>" and never the entry's id, score or status.
Agents always see the grounding in the transcript."""

from __future__ import annotations

from typing import Any

import pytest

from conversations import events, selectors
from conversations.knowledge import selectors as knowledge_selectors
from conversations.knowledge import services
from conversations.knowledge.models import KnowledgeEntry
from conversations.models import Conversation, Message
from conversations.worker import replies
from tests.agent.conftest import user_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def wrapping() -> KnowledgeEntry:
    return services.entry_create(question="How much is gift wrapping?", answer="$4.50.")


@pytest.fixture
def reply(conversation: Conversation, wrapping: KnowledgeEntry) -> Message:
    Message.objects.create(conversation=conversation, role="customer", text="Wrapping price?")
    grounding = [{"entry": wrapping.id, "score": 0.81}, {"entry": 999999, "score": 0.6}]  # the second is gone
    return Message.objects.create(conversation=conversation, role="bot", text="It is $4.50.", grounding=grounding)


def customer_history(conversation: Conversation) -> list[dict[str, Any]]:
    frame = events.for_customer(
        {"type": "history", "conversation": {}, "messages": selectors.conversation_history(conversation)}
    )
    assert frame is not None
    return list(frame["messages"])


def test_a_customer_sees_no_source_by_default(conversation: Conversation, reply: Message) -> None:
    bot = customer_history(conversation)[-1]
    assert "sources" not in bot and "grounding" not in bot
    assert "sources" not in events.done_event(reply.id, reply.text, "complete")


def test_with_the_setting_on_a_customer_reads_the_entrys_question(
    settings: Any, conversation: Conversation, reply: Message, wrapping: KnowledgeEntry
) -> None:
    settings.KNOWLEDGE_SHOW_SOURCES = True
    customer, bot = customer_history(conversation)
    assert "sources" not in customer
    assert bot["sources"] == ["How much is gift wrapping?"] and "grounding" not in bot
    assert str(wrapping.id) not in str(bot["sources"])


@pytest.mark.django_db(transaction=True)  # the worker reads in a thread of its own: rows committed
async def test_the_done_frame_carries_the_source_when_on(settings: Any, reply: Message) -> None:
    settings.KNOWLEDGE_SHOW_SOURCES = True
    lines = await replies._sources(reply)
    frame = events.for_customer(events.done_event(reply.id, reply.text, "complete", "", lines))
    assert frame is not None and frame["sources"] == ["How much is gift wrapping?"]
    settings.KNOWLEDGE_SHOW_SOURCES = False
    assert await replies._sources(reply) == []


def test_history_reads_every_replys_sources_in_one_query(
    settings: Any, conversation: Conversation, wrapping: KnowledgeEntry, django_assert_num_queries: Any
) -> None:
    settings.KNOWLEDGE_SHOW_SOURCES = True
    groundings = [[{"entry": wrapping.id, "score": 0.7}]] * 20 + [[]]
    with django_assert_num_queries(1):
        lines = knowledge_selectors.source_lines(groundings)
    assert lines[0] == ["How much is gift wrapping?"] and lines[-1] == []
    settings.KNOWLEDGE_SHOW_SOURCES = False
    with django_assert_num_queries(0):
        assert knowledge_selectors.source_lines(groundings) == [[]] * 21


def test_agents_always_see_the_grounding_in_the_transcript(
    agent_user: Any, conversation: Conversation, reply: Message, wrapping: KnowledgeEntry
) -> None:
    page = user_client(agent_user).get(f"/agent/conversations/{conversation.id}/").content.decode()
    assert "Grounded on:" in page and "How much is gift wrapping?" in page and "(0.81)" in page
    assert f'href="/agent/knowledge/?show={wrapping.id}"' in page
    shown = user_client(agent_user).get(f"/agent/knowledge/?show={wrapping.id}").content.decode()
    assert f"Showing entry {wrapping.id} alone" in shown and "How much is gift wrapping?" in shown
