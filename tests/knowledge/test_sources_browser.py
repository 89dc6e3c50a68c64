"""The customer's source line in real Chromium: uvicorn and the scripted worker with
KNOWLEDGE_SHOW_SOURCES on, an approved entry embedded by the real MiniLM, and a customer who asks
its question reads "Source: <question>" under the reply; the agent's transcript names the entry."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from conversations.knowledge import services, vectors
from conversations.models import Message
from tests.e2e.browser import signed_in_context
from tests.e2e.live import LiveSystem

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

QUESTION = "How much does gift wrapping cost?"


@pytest.fixture
def showing_sources(browser: Any, django_db_setup: Any) -> Iterator[LiveSystem]:
    """A system of its own (its own Redis prefix, so no other test's worker takes its replies)."""
    system = LiveSystem(fake=True, prefix=f"test-src-{uuid.uuid4().hex[:8]}", env={"KNOWLEDGE_SHOW_SOURCES": "true"})
    yield system
    system.stop()


def test_a_customer_reads_the_source_of_a_grounded_reply(
    showing_sources: LiveSystem, browser: Any, agent_user: Any
) -> None:
    entry = services.entry_create(question=QUESTION, answer="Gift wrapping costs $4.50.")
    services.embedding_store(entry_id=entry.id, phrasings=entry.phrasings(), rows=vectors.embed(entry.phrasings()))
    services.entries_approve(ids=[entry.id], by=agent_user)

    customer = browser.new_context().new_page()
    customer.goto(showing_sources.url + "/")
    customer.wait_for_selector("#connection.online")
    customer.fill("#input", QUESTION)
    customer.keyboard.press("Enter")
    customer.wait_for_selector("li.msg.bot.complete", timeout=60_000)
    assert customer.locator("li.msg.bot.complete .source").inner_text() == f"Source: {QUESTION}"
    reply = Message.objects.get(role="bot")
    assert [g["entry"] for g in reply.grounding] == [entry.id]
    # Neither the entry's id nor its score reaches the customer (the clock and the reply may hold
    # any digit, so the page is searched for what an agent's grounding line would show).
    shown = customer.locator("#messages").inner_text().lower()
    assert f"entry {entry.id}" not in shown and f"{reply.grounding[0]['score']:.2f}" not in shown
    assert not customer.locator("#messages [data-entry], #messages .grounding").count()

    customer.reload()  # from the history frame too
    customer.wait_for_selector("li.msg.bot.complete .source")
    assert customer.locator("li.msg.bot.complete .source").inner_text() == f"Source: {QUESTION}"

    agent = signed_in_context(browser, showing_sources, agent_user).new_page()
    agent.goto(f"{showing_sources.url}/agent/conversations/{reply.conversation_id}/")
    assert QUESTION in agent.locator(f'li[data-id="{reply.id}"] .grounding').inner_text()
