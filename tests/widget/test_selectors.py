"""The chat config both pages render, its suggested questions, and what agents see of where a
customer chats from."""

from __future__ import annotations

from typing import Any

import pytest

from conversations.knowledge.models import KnowledgeEntry
from conversations.models import Conversation, Message, WidgetSite
from conversations.widget import selectors
from tests.agent.conftest import user_client

pytestmark = pytest.mark.django_db

APPROVED = KnowledgeEntry.Status.APPROVED


def entry(question: str, **fields: Any) -> KnowledgeEntry:
    return KnowledgeEntry.objects.create(question=question, answer="a", **{"status": APPROVED, **fields})


def grounded(conversation: Conversation, *entries: KnowledgeEntry, role: str = "bot") -> None:
    Message.objects.create(
        conversation=conversation, role=role, text="r", grounding=[{"entry": e.id, "score": 0.9} for e in entries]
    )


def test_suggestions_are_the_most_used_servable_entries(conversation: Conversation) -> None:
    wrapping, returns, shipping, hours, opening = (
        entry(q) for q in ["Wrapping?", "Returns?", "Shipping?", "Hours?", "Opening?"]
    )
    retired, conflicting = entry("Old?", status="retired"), entry("Disputed?", conflict=True)
    for _ in range(3):
        grounded(conversation, returns, retired, conflicting)
    grounded(conversation, wrapping, shipping)
    grounded(conversation, shipping)
    grounded(conversation, hours)
    grounded(conversation, opening)
    grounded(conversation, wrapping, role="agent")  # only the bot's replies count
    assert selectors.suggested_questions() == ["Returns?", "Shipping?", "Wrapping?", "Hours?"]


def test_there_are_no_suggestions_without_grounded_replies(conversation: Conversation) -> None:
    entry("Unused?")
    assert selectors.suggested_questions() == []


def test_the_standalone_page_gets_the_defaults(conversation: Conversation, settings: Any) -> None:
    grounded(conversation, entry("Returns?"))
    config = selectors.chat_config(None)
    assert config == {
        "title": "Support",
        "greeting": "",
        "brand_colour": "#2563eb",
        "position": "right",
        "prechat": False,
        "prechat_required": False,
        "suggestions": ["Returns?"],
        "widget": False,
    }
    settings.CHAT_SUGGESTIONS = False
    assert selectors.chat_config(None)["suggestions"] == []


def test_the_pages_count_suggestions_once_a_minute_not_per_view(conversation: Conversation) -> None:
    from django.core.cache import cache

    returns = entry("Returns?")
    grounded(conversation, returns)
    assert selectors.chat_config(None)["suggestions"] == ["Returns?"]
    hours = entry("Hours?")
    for _ in range(3):
        grounded(conversation, hours)
    assert selectors.chat_config(None)["suggestions"] == ["Returns?"]  # the minute-old count
    cache.delete(selectors.SUGGESTIONS_CACHE_KEY)  # as its minute running out does
    assert selectors.chat_config(None)["suggestions"] == ["Hours?", "Returns?"]


def test_a_sites_config_follows_its_settings(conversation: Conversation) -> None:
    grounded(conversation, entry("Returns?"))
    site = WidgetSite.objects.create(name="S", title="Ask", greeting="Hi", brand_colour="#abcdef", position="left")
    assert selectors.chat_config(site) == {
        "title": "Ask",
        "greeting": "Hi",
        "brand_colour": "#abcdef",
        "position": "left",
        "prechat": False,
        "prechat_required": False,
        "suggestions": ["Returns?"],
        "widget": True,
    }
    site.prechat, site.suggestions = "required", False
    config = selectors.chat_config(site)
    assert (config["prechat"], config["prechat_required"], config["suggestions"]) == (True, True, [])


def test_the_chat_page_renders_the_standalone_config(customer: Any) -> None:
    from tests.agent.conftest import customer_client

    response = customer_client(customer).get("/")
    assert response.context["chat_config"]["widget"] is False and response.context["widget"] is False


@pytest.mark.parametrize(
    ("user_agent", "summary"),
    [
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/126.0 Mobile Safari/537.36",
            "Chrome on Android",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/17.5 Mobile/15E148 Safari/604.1",
            "Safari on iPhone",
        ),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0", "Firefox on Windows"),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/126.0 Safari/537.36 Edg/126.0",
            "Edge on Windows",
        ),
        ("curl/8.5.0", "curl/8.5.0"),
        ("", ""),
    ],
)
def test_it_summarises_the_browser(user_agent: str, summary: str) -> None:
    assert selectors.browser_summary(user_agent) == summary


def test_agents_see_where_the_customer_chats_from(conversation: Conversation, agent_user: Any) -> None:
    Conversation.objects.filter(id=conversation.id).update(
        page_url="https://shop.example.com/cart",
        user_agent="Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0",
    )
    page = user_client(agent_user).get(f"/agent/conversations/{conversation.id}/").content.decode()
    assert (
        '<a href="https://shop.example.com/cart" target="_blank" rel="noopener noreferrer nofollow" '
        'id="chat-page-url">https://shop.example.com/cart</a>'
    ) in page
    assert "Browser: <span" in page and "Firefox on Windows" in page


def test_the_agents_conversation_payload_carries_the_origin(conversation: Conversation) -> None:
    from conversations import events
    from conversations import selectors as chat_selectors

    conversation.page_url = "https://shop.example.com/"
    payload = chat_selectors.conversation_payload(conversation)
    assert payload["origin"]["page_url"] == "https://shop.example.com/"
    assert "origin" not in (events.for_customer({"type": "status", "conversation": payload}) or {})["conversation"]
