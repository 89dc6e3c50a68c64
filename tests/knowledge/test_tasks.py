"""What agents teach becomes a suggestion: scheduled after the write, embedded in the task."""

from __future__ import annotations

from typing import Any

import pytest

from conversations.chat import services as chat_services
from conversations.knowledge import tasks
from conversations.knowledge.models import KnowledgeEntry
from conversations.models import Message
from conversations.workspace import services as workspace_services

pytestmark = pytest.mark.django_db


def test_a_correction_schedules_a_suggestion_after_its_commit(
    bot_reply: Any, agent_user: Any, knowledge_scheduled: list[int], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        workspace_services.correction_set(message=bot_reply, text="Hello, I am the shop's bot.", author=agent_user)
        assert knowledge_scheduled == []
    assert knowledge_scheduled == [bot_reply.id]


def test_an_agents_answer_to_the_customer_schedules_one_and_a_second_message_does_not(
    conversation: Any, agent_user: Any, knowledge_scheduled: list[int], django_capture_on_commit_callbacks: Any
) -> None:
    chat_services.message_send(conversation=conversation, text="Do you gift wrap?")
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    with django_capture_on_commit_callbacks(execute=True):
        answer = workspace_services.agent_message_send(conversation=conversation, agent=agent_user, text="Yes, $4.50.")
        workspace_services.agent_message_send(conversation=conversation, agent=agent_user, text="Anything else?")
    assert knowledge_scheduled == [answer.customer_message.id]


def test_the_task_suggests_the_customers_question_with_the_correction(conversation: Any, agent_user: Any) -> None:
    reply = chat_services.message_send(
        conversation=conversation, text="How much is gift wrap? I'm jo@example.com"
    ).bot_message
    workspace_services.correction_set(message=reply, text="Gift wrapping costs $4.50 per item.", author=agent_user)
    entry = KnowledgeEntry.objects.get(id=tasks.knowledge_suggest(reply.id))
    assert entry.status == "suggested" and entry.answer == "Gift wrapping costs $4.50 per item."
    assert entry.question == "How much is gift wrap? I'm [email]"
    source = entry.sources.get()
    assert (source.message_id, source.correction_id, source.author) == (reply.id, reply.correction.id, agent_user)


def test_the_same_correction_from_two_conversations_is_one_entry_with_two_sources(
    customer: Any, second_customer: Any, agent_user: Any
) -> None:
    ids = set()
    for owner, question in ((customer, "How much is gift wrapping?"), (second_customer, "How much is gift wrap?")):
        conversation = owner.conversations.create()
        reply = chat_services.message_send(conversation=conversation, text=question).bot_message
        workspace_services.correction_set(message=reply, text="It costs $4.50 per item.", author=agent_user)
        ids.add(tasks.knowledge_suggest(reply.id))
    entry = KnowledgeEntry.objects.get(id=ids.pop())
    assert not ids and entry.sources.count() == 2 and not entry.conflict


def test_two_agents_teaching_different_prices_make_a_conflict(
    customer: Any, second_customer: Any, agent_user: Any, second_agent: Any
) -> None:
    for owner, agent, price in ((customer, agent_user, "$4.50"), (second_customer, second_agent, "$6")):
        conversation = owner.conversations.create()
        reply = chat_services.message_send(conversation=conversation, text="How much is gift wrapping?").bot_message
        workspace_services.correction_set(message=reply, text=f"Gift wrapping costs {price}.", author=agent)
        tasks.knowledge_suggest(reply.id)
    assert list(KnowledgeEntry.objects.values_list("conflict", flat=True)) == [True, True]


def test_a_removed_correction_suggests_nothing(bot_reply: Any, agent_user: Any) -> None:
    workspace_services.correction_set(message=bot_reply, text="Hello there.", author=agent_user)
    workspace_services.correction_set(message=bot_reply, text="", author=agent_user)
    assert tasks.knowledge_suggest(bot_reply.id) is None and not KnowledgeEntry.objects.exists()


def test_a_reply_with_no_question_before_it_suggests_nothing(conversation: Any, agent_user: Any) -> None:
    greeting = Message.objects.create(conversation=conversation, role="agent", text="Hi, I'm Dana.", author=agent_user)
    assert tasks.knowledge_suggest(greeting.id) is None


def test_an_answer_keeps_the_shops_address_and_loses_what_the_customer_gave(conversation: Any, agent_user: Any) -> None:
    chat_services.message_send(conversation=conversation, text="Hi, my number is 07700 900123")
    Message.objects.filter(conversation=conversation, role="bot").update(status="complete")
    reply = chat_services.message_send(conversation=conversation, text="Where is your shop?").bot_message
    answer = "Our shop is at 12 Wren Lane, Millbrook; we'll text 07700 900123 when ready."
    workspace_services.correction_set(message=reply, text=answer, author=agent_user)
    entry = KnowledgeEntry.objects.get(id=tasks.knowledge_suggest(reply.id))
    assert entry.answer == "Our shop is at 12 Wren Lane, Millbrook; we'll text [phone] when ready."
