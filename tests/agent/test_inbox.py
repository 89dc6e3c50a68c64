"""The agent inbox: filters, search, pagination, latest activity first."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from conversations.models import Conversation, Customer, Feedback, Message
from finetuning.models import ModelVersion

from .conftest import add_messages

pytestmark = pytest.mark.django_db


def listed(client: Client, query: str = "") -> list[str]:
    response = client.get("/agent/" + (f"?{query}" if query else ""))
    assert response.status_code == 200
    return [str(c.id) for c in response.context["page"]]


def started(text: str, *, days_ago: int = 0, **fields: Any) -> Conversation:
    conversation = Conversation.objects.create(customer=Customer.objects.create(), **fields)
    add_messages(conversation, ("customer", text))
    moment = timezone.now() - timedelta(days=days_ago)  # started then, and nothing since
    Conversation.objects.filter(id=conversation.id).update(created_at=moment, last_activity_at=moment)
    return conversation


def test_it_lists_conversations_with_messages_newest_first(agent_client: Client) -> None:
    old, new = started("old", days_ago=2), started("new")
    Conversation.objects.create(customer=Customer.objects.create())  # a visit with nothing said
    assert listed(agent_client) == [str(new.id), str(old.id)]


def test_it_filters_by_status(agent_client: Client) -> None:
    started("a")
    waiting = started("b", status="waiting")
    assert listed(agent_client, "status=waiting") == [str(waiting.id)]
    assert len(listed(agent_client, "status=nonsense")) == 2  # an unknown value is ignored


def test_it_filters_by_negative_feedback_and_review(agent_client: Client) -> None:
    good, bad = started("good"), started("bad", reviewed=True)
    for conversation, positive in ((good, True), (bad, False)):
        reply = add_messages(conversation, ("bot", "reply"))[0]
        Feedback.objects.create(message=reply, source="customer", positive=positive)
    assert listed(agent_client, "negative=1") == [str(bad.id)]
    assert listed(agent_client, "reviewed=yes") == [str(bad.id)]
    assert listed(agent_client, "reviewed=no") == [str(good.id)]


def test_it_filters_by_date_range(agent_client: Client) -> None:
    today, last_week = started("today"), started("last week", days_ago=7)
    day = (timezone.now() - timedelta(days=7)).date().isoformat()
    assert listed(agent_client, f"since={day}&until={day}") == [str(last_week.id)]
    assert listed(agent_client, f"since={timezone.now().date().isoformat()}") == [str(today.id)]
    assert len(listed(agent_client, "since=yesterday")) == 2


def test_it_filters_by_model_version(agent_client: Client) -> None:
    version = ModelVersion.objects.create(name="v2", base_model="base")
    tuned, plain = started("tuned"), started("plain")
    add_messages(tuned, ("bot", "by v2"), model_version=version)
    add_messages(plain, ("bot", "by base"))
    assert listed(agent_client, f"model_version={version.id}") == [str(tuned.id)]


def test_it_searches_message_text(agent_client: Client) -> None:
    refund = started("I would like a refund for my shoes")
    started("Where is my parcel?")
    assert listed(agent_client, "q=refund") == [str(refund.id)]
    if connection.vendor == "postgresql":  # stemmed full-text search
        assert listed(agent_client, "q=refunds+shoe") == [str(refund.id)]
    else:
        assert listed(agent_client, "q=REFUND") == [str(refund.id)]


def test_it_paginates(agent_client: Client, settings: Any) -> None:
    settings.AGENT_INBOX_PAGE_SIZE = 2
    made = [started(f"m{i}", days_ago=i) for i in range(5)]
    assert listed(agent_client) == [str(c.id) for c in made[:2]]
    assert listed(agent_client, "page=3") == [str(made[4].id)]
    assert listed(agent_client, "page=99") == [str(made[4].id)]
    page = agent_client.get("/agent/?status=bot&page=2").content.decode()
    assert "status=bot&amp;page=3" in page


def test_the_inbox_renders_customer_text_as_text(agent_client: Client) -> None:
    started('<script>alert("x")</script><img src=x onerror=alert(1)>')
    page = agent_client.get("/agent/").content.decode()
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert" in page


def test_the_inbox_counts_only_visible_messages(agent_client: Client) -> None:
    conversation = started("hi")
    add_messages(conversation, ("system", "internal"))
    response = agent_client.get("/agent/")
    assert response.context["page"][0].message_count == 1
    assert Message.objects.count() == 2


def test_the_inbox_says_how_many_wait_for_an_agent(agent_client: Client) -> None:
    started("a", status="waiting")
    started("b", status="waiting")
    started("c")
    page = agent_client.get("/agent/").content.decode()
    assert "2 conversations waiting for an agent" in page
