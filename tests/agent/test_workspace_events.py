"""Who hears of each of the agents' writes: what reaches the customer goes to the conversation's
group, what is agent-only (ratings, corrections, review) to the agents' group alone."""

from __future__ import annotations

from typing import Any

import pytest

from conversations.chat import services as chat_services
from conversations.models import Conversation, Message
from conversations.workspace import services as workspace_services
from tests.capture import CaptureEvents

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clean_redis")]


def test_a_takeover_cancels_the_pending_reply_and_tells_the_customer_and_the_inbox(
    conversation: Conversation, agent_user: Any, capture_events: CaptureEvents
) -> None:
    reply = chat_services.message_send(conversation=conversation, text="hi").bot_message
    assert reply is not None
    with capture_events() as sent:
        workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    assert sent.frames() == [
        ("conversation", "done"),
        ("conversation", "status"),
        ("agents", "inbox"),
        ("agents", "activity"),  # taken over, for the agents' threads and the reports
        ("conversation", "message"),  # "Dana joined the conversation." (tests/conversations/test_system_lines.py)
        ("agents", "inbox"),  # assigned to Dana, who took it over (tests/agent/test_assignment.py)
        ("agents", "activity"),
    ]
    done, status, _ = sent.to_conversation()
    assert (done["message_id"], done["status"]) == (reply.id, Message.Status.CANCELLED)
    assert (status["conversation"]["status"], status["conversation"]["agent"]) == ("agent", "Dana")
    assert sent.to_agents()[0]["alert"] is False


def test_handing_back_tells_the_customer_and_the_inbox(
    conversation: Conversation, agent_user: Any, capture_events: CaptureEvents
) -> None:
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    with capture_events() as sent:
        workspace_services.conversation_hand_back(conversation=conversation, agent=agent_user)
    assert sent.frames() == [
        ("conversation", "status"),
        ("agents", "inbox"),
        ("agents", "activity"),
        ("conversation", "message"),
    ]
    assert sent.to_conversation()[0]["conversation"]["status"] == Conversation.Status.BOT
    assert sent.to_agents()[1]["event"]["kind"] == "handed_back"


def test_closing_tells_the_customer_and_the_inbox(
    conversation: Conversation, agent_user: Any, capture_events: CaptureEvents
) -> None:
    with capture_events() as sent:
        workspace_services.conversation_close(conversation=conversation, agent=agent_user)
    assert sent.frames() == [
        ("conversation", "message"),
        ("conversation", "status"),
        ("agents", "inbox"),
        ("agents", "activity"),
    ]
    assert sent.to_agents()[0]["conversation"]["status"] == Conversation.Status.CLOSED
    assert (sent.to_agents()[1]["event"]["kind"], sent.to_agents()[1]["event"]["actor"]) == ("closed", "Dana")


def test_an_agents_message_reaches_the_customer_and_the_inbox(
    conversation: Conversation, agent_user: Any, capture_events: CaptureEvents
) -> None:
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    with capture_events() as sent:
        workspace_services.agent_message_send(conversation=conversation, agent=agent_user, text="Hi, Dana here")
    assert sent.frames() == [("conversation", "message"), ("agents", "inbox")]
    message = sent.to_conversation()[0]["message"]
    assert (message["role"], message["author"]) == ("agent", "Dana")
    assert sent.groups() == {f"conversation.{conversation.id}", "agents"}


def test_an_agents_resend_sends_nothing(
    conversation: Conversation, agent_user: Any, capture_events: CaptureEvents
) -> None:
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    workspace_services.agent_message_send(conversation=conversation, agent=agent_user, text="Hi", client_id="a1")
    with capture_events() as sent:
        workspace_services.agent_message_send(conversation=conversation, agent=agent_user, text="Hi", client_id="a1")
    assert sent.frames() == []


def test_an_agents_rating_reaches_the_agents_only(
    bot_reply: Message, agent_user: Any, capture_events: CaptureEvents
) -> None:
    with capture_events() as sent:
        chat_services.feedback_set(message=bot_reply, source="agent", positive=False, reason="wrong", author=agent_user)
    assert sent.frames() == [("agents", "review"), ("agents", "inbox")]
    review, inbox = sent.to_agents()
    assert review["agent_feedback"]["positive"] is False
    assert inbox["conversation"]["has_negative"] is True


@pytest.mark.parametrize(("text", "stored"), [("Tomorrow, by noon.", "Tomorrow, by noon."), ("  ", "")])
def test_a_correction_reaches_the_agents_only(
    bot_reply: Message, agent_user: Any, capture_events: CaptureEvents, text: str, stored: str
) -> None:
    with capture_events() as sent:
        workspace_services.correction_set(message=bot_reply, text=text, author=agent_user)
    assert sent.frames() == [("agents", "review")]
    assert sent.to_agents()[0] == {
        "type": "review",
        "conversation_id": str(bot_reply.conversation_id),
        "message_id": bot_reply.id,
        "correction": stored,
    }


def test_a_review_reaches_the_agents_only(conversation: Conversation, capture_events: CaptureEvents) -> None:
    with capture_events() as sent:
        workspace_services.conversation_review(conversation=conversation, tags="billing", reviewed=True)
    assert sent.frames() == [("agents", "review")]
    assert sent.to_agents()[0] == {
        "type": "review",
        "conversation_id": str(conversation.id),
        "tags": ["billing"],
        "note": "",
        "reviewed": True,
        "exclude_from_training": False,
    }
