"""The lines in the thread that say who holds the conversation: "Dana joined the conversation.",
"Dana left; the assistant answers again.", "Dana closed the conversation." Stored as SYSTEM
messages, sent to the customer and the agents, and kept out of everything that learns or counts."""

from __future__ import annotations

from typing import Any

import pytest

from conversations import events, selectors
from conversations.chat import services as chat_services
from conversations.models import Conversation, Message
from conversations.prompts import Turn, build_chat
from conversations.workspace import selectors as workspace_selectors
from conversations.workspace import services as workspace_services
from finetuning.datasets import conversation_candidates
from tests.capture import CaptureEvents
from tests.sockets import open_agent, open_chat, receive_until

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clean_redis")]


def lines(conversation: Conversation) -> list[str]:
    return list(conversation.messages.filter(role=Message.Role.SYSTEM).values_list("text", flat=True))


def test_a_takeover_writes_a_joined_line_after_the_status(
    conversation: Conversation, agent_user: Any, capture_events: CaptureEvents
) -> None:
    with capture_events() as sent:
        workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    assert lines(conversation) == ["Dana joined the conversation."]
    assert sent.frames() == [
        ("conversation", "status"),
        ("agents", "inbox"),
        ("agents", "activity"),
        ("conversation", "message"),
        ("agents", "inbox"),  # assigned to Dana, who took it over (tests/agent/test_assignment.py)
        ("agents", "activity"),
    ]
    line = sent.to_conversation()[-1]["message"]
    assert (line["role"], line["text"], line["status"]) == ("system", "Dana joined the conversation.", "complete")
    assert events.for_customer(sent.to_conversation()[-1]) is not None  # the customer reads it too


def test_a_second_takeover_by_the_holder_writes_no_second_line(conversation: Conversation, agent_user: Any) -> None:
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    assert lines(conversation) == ["Dana joined the conversation."]


def test_handing_back_says_the_agent_left_and_the_assistant_answers(
    conversation: Conversation, agent_user: Any, capture_events: CaptureEvents
) -> None:
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    with capture_events() as sent:
        workspace_services.conversation_hand_back(conversation=conversation, agent=agent_user)
    assert lines(conversation)[-1] == "Dana left; the assistant answers again."
    assert sent.frames()[-1] == ("conversation", "message")


def test_handing_back_a_waiting_conversation_names_nobody(conversation: Conversation, agent_user: Any) -> None:
    chat_services.handoff_request(conversation=conversation)
    workspace_services.conversation_hand_back(conversation=conversation, agent=agent_user)
    assert lines(conversation) == ["The assistant answers again."]


def test_closing_writes_the_line_before_the_closed_status(
    conversation: Conversation, agent_user: Any, capture_events: CaptureEvents
) -> None:
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    with capture_events() as sent:
        workspace_services.conversation_close(conversation=conversation, agent=agent_user)
    assert lines(conversation)[-1] == "Dana closed the conversation."
    assert sent.frames() == [
        ("conversation", "message"),
        ("conversation", "status"),
        ("agents", "inbox"),
        ("agents", "activity"),
    ]


def test_a_refused_takeover_writes_no_line(conversation: Conversation, agent_user: Any, second_agent: Any) -> None:
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    with pytest.raises(Exception, match="holds this conversation"):
        workspace_services.conversation_takeover(conversation=conversation, agent=second_agent)
    assert lines(conversation) == ["Dana joined the conversation."]


def test_the_history_holds_the_lines_for_the_customer_and_the_agents(
    conversation: Conversation, agent_user: Any
) -> None:
    chat_services.message_send(conversation=conversation, text="A person, please")
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    frame = selectors.history_frame(conversation)
    assert [m["role"] for m in frame["messages"]] == ["customer", "bot", "system"]
    customer_frame = events.for_customer(frame)
    assert customer_frame is not None
    assert customer_frame["messages"][-1]["text"] == "Dana joined the conversation."


def test_the_lines_stay_out_of_the_prompt() -> None:
    history = [Turn("customer", "Hi"), Turn("system", "Dana joined the conversation."), Turn("agent", "Dana here.")]
    chat = build_chat(system_prompt="Be kind.", history=history, count_tokens=len, budget_tokens=1000)
    assert "Dana joined" not in repr(chat)


def test_the_lines_stay_out_of_the_training_candidates(conversation: Conversation, agent_user: Any) -> None:
    Message.objects.create(conversation=conversation, role="customer", text="Where is my parcel?")
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    Message.objects.create(conversation=conversation, role="agent", text="It ships today.", author=agent_user)
    candidates, _ = conversation_candidates(conversation, conversation.messages.all(), clean=lambda text: text)
    assert len(candidates) == 1
    assert "Dana joined" not in repr(candidates[0])
    system_line = conversation.messages.get(role=Message.Role.SYSTEM)
    assert system_line.id not in candidates[0].message_ids


def test_the_lines_count_in_neither_the_inbox_nor_its_last_text(conversation: Conversation, agent_user: Any) -> None:
    chat_services.handoff_request(conversation=conversation)
    Message.objects.create(conversation=conversation, role="customer", text="Hello?")
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    assert selectors.inbox_item(conversation)["last_text"] == "Hello?"
    row = workspace_selectors.inbox(workspace_selectors.InboxFilters()).get(id=conversation.id)
    assert row.message_count == 1


def test_the_lines_neither_count_as_a_retry_nor_block_one(conversation: Conversation, agent_user: Any) -> None:
    reply = chat_services.message_send(conversation=conversation, text="hi").bot_message
    assert reply is not None
    Message.objects.filter(id=reply.id).update(status=Message.Status.FAILED)
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    workspace_services.conversation_hand_back(conversation=conversation, agent=agent_user)
    retried = chat_services.reply_retry(conversation=conversation)  # the failed reply is still the last one
    assert retried.role == Message.Role.BOT


def test_searching_an_agents_name_does_not_find_every_conversation_they_joined(
    conversation: Conversation, agent_user: Any
) -> None:
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    assert not workspace_selectors.messages_matching("joined").exists()


@pytest.mark.django_db(transaction=True)
async def test_the_customer_and_the_watching_agent_hear_the_joined_line_live(customer: Any, agent_user: Any) -> None:
    chat, history = await open_chat(customer)
    conversation_id = history["conversation"]["id"]
    agent = await open_agent(agent_user)
    await agent.send_json_to({"type": "watch", "conversation_id": conversation_id})
    await receive_until(agent, "history")
    await agent.send_json_to({"type": "takeover", "conversation_id": conversation_id})
    frames = await receive_until(chat, lambda f: f["type"] == "message" and f["message"]["role"] == "system")
    assert frames[-1]["message"]["text"] == "Dana joined the conversation."
    seen = await receive_until(agent, lambda f: f["type"] == "message" and f["message"]["role"] == "system")
    assert seen[-1]["conversation_id"] == conversation_id
    await chat.disconnect()
    await agent.disconnect()
