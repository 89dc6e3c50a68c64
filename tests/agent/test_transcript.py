"""The transcript view and the review actions on it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client

from conversations.models import Conversation, Correction, Feedback, Message
from finetuning.models import ModelVersion

from .conftest import add_messages

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clean_redis")]
JSON = {"HTTP_ACCEPT": "application/json"}


def test_it_shows_every_message_with_role_time_latency_model_and_feedback(
    agent_client: Client, conversation: Conversation
) -> None:
    version = ModelVersion.objects.create(name="tuned-7", base_model="base")
    question, reply = add_messages(conversation, ("customer", "Where is my order?"), ("bot", "It ships tomorrow."))
    Message.objects.filter(id=reply.id).update(
        first_token_at=reply.created_at + timedelta(seconds=0.4),
        finished_at=reply.created_at + timedelta(seconds=1.5),
        model_version=version,
        model_name="smollm2+tuned-7",
    )
    Feedback.objects.create(message=reply, source="customer", positive=False, reason="wrong", comment="It did not")
    page = agent_client.get(f"/agent/conversations/{conversation.id}/").content.decode()
    for expected in (
        "Where is my order?",
        "It ships tomorrow.",
        "first token 0.4 s",
        "total 1.5 s",
        "tuned-7",
        "smollm2+tuned-7",
        "👎 not helpful (wrong)",
        "It did not",
        question.created_at.strftime("%H:%M:%S"),
    ):
        assert expected in page


def test_it_renders_script_and_html_as_text(agent_client: Client, conversation: Conversation) -> None:
    payload = '<script>alert("pwned")</script><b onmouseover=alert(1)>bold</b>'
    add_messages(conversation, ("customer", payload), ("bot", payload))
    conversation.note = payload
    conversation.tags = [payload]
    conversation.save()
    page = agent_client.get(f"/agent/conversations/{conversation.id}/").content.decode()
    assert "<script>alert" not in page and "<b onmouseover" not in page
    assert page.count("&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;") >= 4


def test_an_agent_rates_a_reply_and_rerates_it(agent_client: Client, answered: Conversation, agent_user: Any) -> None:
    reply = answered.messages.get(role="bot")
    url = f"/agent/messages/{reply.id}/feedback"
    answer = agent_client.post(url, {"positive": "0", "reason": "incomplete"}, **JSON).json()
    assert answer["agent_feedback"] == {"positive": False, "reason": "incomplete", "comment": ""}
    agent_client.post(url, {"positive": "1"}, **JSON)
    feedback = Feedback.objects.get(message=reply, source="agent")
    assert feedback.positive and feedback.reason == "" and feedback.author == agent_user


def test_a_plain_form_post_redirects_back_to_the_transcript(agent_client: Client, answered: Conversation) -> None:
    reply = answered.messages.get(role="bot")
    response = agent_client.post(f"/agent/messages/{reply.id}/correction", {"text": "It ships today."})
    assert response.status_code == 302 and response["Location"] == f"/agent/conversations/{answered.id}/"
    correction = Correction.objects.get(message=reply)
    assert correction.text == "It ships today."


def test_the_review_fields_are_saved(agent_client: Client, conversation: Conversation) -> None:
    url = f"/agent/conversations/{conversation.id}/review"
    answer = agent_client.post(
        url,
        {
            "tags": "billing, late",
            "note": "Customer was upset",
            "reviewed": ["0", "1"],
            "exclude_from_training": ["0", "1"],
        },
        **JSON,
    ).json()
    assert answer["tags"] == ["billing", "late"] and answer["reviewed"] and answer["exclude_from_training"]
    agent_client.post(url, {"reviewed": "0"}, **JSON)
    conversation.refresh_from_db()
    assert (
        conversation.note == "Customer was upset" and not conversation.reviewed and conversation.exclude_from_training
    )


def test_bad_review_input_is_refused_with_a_reason(agent_client: Client, conversation: Conversation) -> None:
    response = agent_client.post(
        f"/agent/conversations/{conversation.id}/review",
        {"tags": ",".join(["t"] * 5 + [f"x{i}" for i in range(30)])},
        **JSON,
    )
    assert response.status_code == 400 and response.json()["code"] == "invalid_tags"


def test_rating_a_customer_message_is_refused(agent_client: Client, answered: Conversation) -> None:
    question = answered.messages.get(role="customer")
    response = agent_client.post(f"/agent/messages/{question.id}/feedback", {"positive": "1"}, **JSON)
    assert response.status_code == 400 and response.json()["code"] == "not_rateable"


def test_review_actions_need_csrf(agent_user: Any, answered: Conversation) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(agent_user)
    reply = answered.messages.get(role="bot")
    for url in (
        f"/agent/messages/{reply.id}/feedback",
        f"/agent/messages/{reply.id}/correction",
        f"/agent/conversations/{answered.id}/review",
    ):
        assert client.post(url, {"positive": "1", "text": "x", "note": "x"}).status_code == 403


def test_review_actions_refuse_get(agent_client: Client, answered: Conversation) -> None:
    reply = answered.messages.get(role="bot")
    assert agent_client.get(f"/agent/messages/{reply.id}/feedback").status_code == 405


def test_the_customer_chat_page_offers_the_handoff_button_and_reasons(client: Client) -> None:
    page = client.get("/").content.decode()
    assert 'id="handoff"' in page and "Talk to a person" in page
    assert '"wrong", "incomplete", "unhelpful", "rude", "other"' in page
