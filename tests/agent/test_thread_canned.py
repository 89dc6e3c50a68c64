"""Canned replies (the page, its checks, who may use it, the Django admin) and the snippets the
reply box offers after a slash: canned replies, then approved knowledge entries."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from conversations.knowledge.models import KnowledgeEntry
from conversations.models import CannedReply
from conversations.workspace import thread

from .conftest import user_client

pytestmark = pytest.mark.django_db


def reply(shortcut: str, text: str = "Some text.") -> CannedReply:
    return CannedReply.objects.create(shortcut=shortcut, text=text)


def entry(question: str, answer: str, **fields: Any) -> KnowledgeEntry:
    return KnowledgeEntry.objects.create(question=question, answer=answer, **fields)


def test_an_agent_adds_a_canned_reply_and_sees_it_listed(agent_client: Client, agent_user: Any) -> None:
    response = agent_client.post("/agent/canned/", {"shortcut": "/Refund-Policy", "text": "  Refunds take 5 days. "})
    saved = CannedReply.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/agent/canned/?saved=refund-policy#canned-{saved.id}"
    assert (saved.shortcut, saved.text, saved.created_by) == ("refund-policy", "Refunds take 5 days.", agent_user)
    page = agent_client.get(response["Location"]).content.decode()
    assert "/refund-policy" in page and "Refunds take 5 days." in page and "Saved /refund-policy." in page


def test_it_says_beside_the_field_what_is_wrong_with_a_shortcut(agent_client: Client) -> None:
    response = agent_client.post("/agent/canned/", {"shortcut": "two words!", "text": "x"})
    assert response.status_code == 400
    form = response.context["form"]
    assert list(form.errors) == ["shortcut"]
    page = response.content.decode()
    assert 'id="shortcut-error"' in page and "lower-case letters, digits" in page
    assert not CannedReply.objects.exists()


def test_it_refuses_a_duplicate_shortcut_clearly(agent_client: Client) -> None:
    reply("refund")
    response = agent_client.post("/agent/canned/", {"shortcut": "REFUND", "text": "another"})
    assert response.status_code == 400
    assert response.context["form"].errors["shortcut"] == [
        "Another canned reply already has this shortcut: pick another."
    ]
    assert CannedReply.objects.count() == 1


def test_it_needs_a_text(agent_client: Client) -> None:
    response = agent_client.post("/agent/canned/", {"shortcut": "empty", "text": "   "})
    assert response.status_code == 400
    assert "text" in response.context["form"].errors


def test_a_canned_reply_is_no_longer_than_a_message_to_a_customer(agent_client: Client) -> None:
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    assert agent_client.post("/agent/canned/", {"shortcut": "long", "text": "x" * limit}).status_code == 302
    response = agent_client.post("/agent/canned/", {"shortcut": "longer", "text": "x" * (limit + 1)})
    assert response.status_code == 400
    assert f"at most {limit} characters" in response.context["form"].errors["text"][0]


def test_an_agent_edits_a_canned_reply(agent_client: Client) -> None:
    saved = reply("refund", "old")
    page = agent_client.get(f"/agent/canned/{saved.id}/edit").content.decode()
    assert 'value="refund"' in page and "old</textarea>" in page
    response = agent_client.post(f"/agent/canned/{saved.id}/edit", {"shortcut": "refunds", "text": "new"})
    assert response.status_code == 302
    saved.refresh_from_db()
    assert (saved.shortcut, saved.text) == ("refunds", "new")


def test_editing_keeps_its_own_shortcut_but_not_anothers(agent_client: Client) -> None:
    saved, other = reply("refund"), reply("shipping")
    assert agent_client.post(f"/agent/canned/{saved.id}/edit", {"shortcut": "refund", "text": "t"}).status_code == 302
    response = agent_client.post(f"/agent/canned/{saved.id}/edit", {"shortcut": other.shortcut, "text": "t"})
    assert response.status_code == 400
    assert "Another canned reply already has this shortcut" in response.content.decode()


def test_deleting_asks_first_then_deletes(agent_client: Client) -> None:
    saved = reply("refund", "Refunds take 5 days.")
    page = agent_client.get(f"/agent/canned/{saved.id}/delete").content.decode()
    assert "Delete /refund?" in page and "Refunds take 5 days." in page
    assert CannedReply.objects.filter(id=saved.id).exists()  # asking deletes nothing
    response = agent_client.post(f"/agent/canned/{saved.id}/delete")
    assert (response.status_code, response["Location"]) == (302, "/agent/canned/?deleted=refund")
    assert not CannedReply.objects.exists()


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/agent/canned/"),
        ("post", "/agent/canned/"),
        ("get", "/agent/canned/{id}/edit"),
        ("post", "/agent/canned/{id}/delete"),
        ("get", "/agent/snippets.json?q=ref"),
    ],
)
def test_only_agents_reach_the_canned_replies(method: str, url: str, plain_user: Any) -> None:
    saved = reply("refund")
    url = url.format(id=saved.id)
    data = {"shortcut": "new", "text": "t"} if method == "post" else None
    anonymous = getattr(Client(), method)(url, data)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/?next=")
    assert getattr(user_client(plain_user), method)(url, data).status_code == 403
    assert list(CannedReply.objects.values_list("shortcut", flat=True)) == ["refund"]


def test_canned_replies_are_managed_in_the_django_admin(admin_user: Any) -> None:
    client = user_client(admin_user)
    assert client.get("/admin/conversations/cannedreply/").status_code == 200
    response = client.post("/admin/conversations/cannedreply/add/", {"shortcut": "hello", "text": "Hello there!"})
    assert response.status_code == 302
    assert CannedReply.objects.get().created_by == admin_user
    bad = client.post("/admin/conversations/cannedreply/add/", {"shortcut": "Bad Shortcut", "text": "x"})
    assert bad.status_code == 200 and CannedReply.objects.count() == 1  # the form again, with its error


def test_snippets_offer_shortcuts_starting_with_the_query_first(agent_client: Client) -> None:
    reply("refund", "Refunds take 5 days.")
    reply("partial-refund", "Half back.")
    reply("shipping", "Ships in 2 days.")
    answer = agent_client.get("/agent/snippets.json?q=ref").json()
    assert answer["ok"] is True
    assert [s["label"] for s in answer["snippets"]] == ["/refund", "/partial-refund"]
    assert answer["snippets"][0] == {
        "kind": "canned",
        "shortcut": "refund",
        "label": "/refund",
        "text": "Refunds take 5 days.",
    }


def test_an_empty_query_lists_the_canned_replies_only(agent_client: Client) -> None:
    reply("b")
    reply("a")
    entry("How long do refunds take?", "5 days.", status="approved")
    assert [s["shortcut"] for s in agent_client.get("/agent/snippets.json").json()["snippets"]] == ["a", "b"]


def test_snippets_offer_approved_knowledge_by_the_words_of_its_question(agent_client: Client) -> None:
    reply("refund", "Refunds take 5 days.")
    entry("How long do refunds take?", "Five working days.", status="approved")
    entry("Can I get a refund on sale items?", "No.", status="suggested")
    entry("Are refunds possible after a year?", "No.", status="retired")
    entry("Do you refund shipping?", "Yes.", status="approved", conflict=True)
    entry("Where is my parcel?", "Tracking link.", status="approved", alternatives=["refund my parcel"])
    snippets = agent_client.get("/agent/snippets.json?q=refund").json()["snippets"]
    assert [(s["kind"], s["label"], s["text"]) for s in snippets] == [
        ("canned", "/refund", "Refunds take 5 days."),
        ("knowledge", "How long do refunds take?", "Five working days."),
        ("knowledge", "Where is my parcel?", "Tracking link."),  # by another phrasing of the question
    ]
    words = agent_client.get("/agent/snippets.json?q=long-refunds").json()["snippets"]
    assert [s["label"] for s in words] == ["How long do refunds take?"]  # every word must be there


def test_snippets_are_few(agent_client: Client) -> None:
    for i in range(thread.SNIPPET_LIMIT + 3):
        reply(f"r{i:02d}")
    entry("r words", "r", status="approved")
    assert len(agent_client.get("/agent/snippets.json?q=r").json()["snippets"]) == thread.SNIPPET_LIMIT
