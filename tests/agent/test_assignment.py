"""Assignment: take, assign to a colleague, unassign; a takeover assigns; the events and frames
each writes; round-robin auto-assignment among the agents online (a workspace socket open)."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.test import Client

from conversations import events
from conversations.chat import services as chat_services
from conversations.errors import ChatError
from conversations.models import Conversation, ConversationEvent, Customer
from conversations.workspace import services
from tests.capture import CaptureEvents
from tests.sockets import open_agent, open_chat, receive_until

from .conftest import add_messages, user_client

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clean_redis")]


def kinds(conversation: Conversation) -> list[tuple[str, str | None, str | None]]:
    return [
        (e.kind, e.actor.username if e.actor else None, e.assignee.username if e.assignee else None)
        for e in ConversationEvent.objects.filter(conversation=conversation).select_related("actor", "assignee")
    ]


def test_an_agent_assigns_a_colleague_and_the_team_hears_it(
    conversation: Conversation, agent_user: User, second_agent: User, capture_events: CaptureEvents
) -> None:
    add_messages(conversation, ("customer", "Hello?"))
    with capture_events() as sent:
        services.conversation_assign(conversation=conversation, actor=agent_user, assignee=second_agent)
    conversation.refresh_from_db()
    assert conversation.assignee_id == second_agent.id
    assert kinds(conversation) == [("assigned", "dana", "eli")]
    assert sent.frames() == [("agents", "inbox"), ("agents", "activity")]
    row, activity = sent.to_agents()
    assert (row["conversation"]["assignee"], row["conversation"]["assignee_id"]) == ("Eli", second_agent.id)
    assert (activity["event"]["kind"], activity["event"]["actor"], activity["event"]["assignee"]) == (
        "assigned",
        "Dana",
        "Eli",
    )


def test_assigning_again_to_the_same_agent_writes_nothing(
    conversation: Conversation, agent_user: User, capture_events: CaptureEvents
) -> None:
    services.conversation_assign(conversation=conversation, actor=agent_user, assignee=agent_user)
    with capture_events() as sent:
        services.conversation_assign(conversation=conversation, actor=agent_user, assignee=agent_user)
    assert sent.frames() == []
    assert kinds(conversation) == [("assigned", "dana", "dana")]


def test_unassigning_records_who_did_it(conversation: Conversation, agent_user: User, second_agent: User) -> None:
    services.conversation_assign(conversation=conversation, actor=agent_user, assignee=second_agent)
    services.conversation_assign(conversation=conversation, actor=second_agent, assignee=None)
    conversation.refresh_from_db()
    assert conversation.assignee_id is None
    assert kinds(conversation) == [("assigned", "dana", "eli"), ("unassigned", "eli", None)]


def test_only_agents_can_be_assigned(conversation: Conversation, agent_user: User, plain_user: User) -> None:
    with pytest.raises(ChatError) as refused:
        services.conversation_assign(conversation=conversation, actor=agent_user, assignee=plain_user)
    assert refused.value.code == "not_an_agent"
    assert Conversation.objects.get(id=conversation.id).assignee_id is None


def test_a_closed_conversation_cannot_be_assigned(conversation: Conversation, agent_user: User) -> None:
    services.conversation_close(conversation=conversation, agent=agent_user)
    with pytest.raises(ChatError) as refused:
        services.conversation_assign(conversation=conversation, actor=agent_user, assignee=agent_user)
    assert refused.value.code == "conversation_closed"


def test_a_conversation_another_agent_holds_is_given_away_only_by_staff(
    conversation: Conversation, agent_user: User, second_agent: User, admin_user: User
) -> None:
    services.conversation_takeover(conversation=conversation, agent=second_agent)
    with pytest.raises(ChatError) as refused:
        services.conversation_assign(conversation=conversation, actor=agent_user, assignee=agent_user)
    assert refused.value.code == "held_by_another_agent"
    assert "Eli holds" in refused.value.detail
    services.conversation_assign(conversation=conversation, actor=admin_user, assignee=agent_user)
    assert Conversation.objects.get(id=conversation.id).assignee_id == agent_user.id


def test_a_takeover_assigns_the_agent_who_took_it(
    conversation: Conversation, agent_user: User, second_agent: User
) -> None:
    services.conversation_assign(conversation=conversation, actor=agent_user, assignee=second_agent)
    services.conversation_takeover(conversation=conversation, agent=agent_user)
    conversation.refresh_from_db()
    assert (conversation.agent_id, conversation.assignee_id) == (agent_user.id, agent_user.id)
    assert [k for k, _, _ in kinds(conversation)] == ["assigned", "taken_over", "assigned"]
    assert kinds(conversation)[-1] == ("assigned", "dana", "dana")


def test_the_assign_endpoint_takes_assigns_and_refuses(
    conversation: Conversation, agent_client: Client, agent_user: User, second_agent: User, plain_user: User
) -> None:
    url = f"/agent/conversations/{conversation.id}/assign"
    json = {"HTTP_ACCEPT": "application/json"}
    answer = agent_client.post(url, {"assignee": "me"}, **json)
    assert answer.json() == {"ok": True, "assignee_id": agent_user.id}
    answer = agent_client.post(url, {"assignee": str(second_agent.id)}, **json)
    assert answer.json()["assignee_id"] == second_agent.id
    refused = agent_client.post(url, {"assignee": str(plain_user.id)}, **json)
    assert (refused.status_code, refused.json()["code"]) == (400, "not_an_agent")
    refused = agent_client.post(url, {"assignee": "somebody"}, **json)
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_assignee")
    assert agent_client.post(url, {"assignee": ""}, **json).json()["assignee_id"] is None


def test_the_assign_endpoint_is_for_agents(conversation: Conversation, plain_user: User) -> None:
    url = f"/agent/conversations/{conversation.id}/assign"
    assert Client().post(url, {"assignee": "me"}).status_code == 302  # to the login page
    assert user_client(plain_user).post(url, {"assignee": "me"}).status_code == 403
    assert Conversation.objects.get(id=conversation.id).assignee_id is None


@pytest.mark.django_db(transaction=True)
async def test_an_assignment_over_the_socket_reaches_both_agents_and_not_the_customer(
    customer: Customer, agent_user: User, second_agent: User
) -> None:
    chat, history = await open_chat(customer)
    conversation_id = history["conversation"]["id"]
    dana, eli = await open_agent(agent_user), await open_agent(second_agent)
    await dana.send_json_to({"type": "assign", "conversation_id": conversation_id, "assignee": second_agent.id})
    for socket in (dana, eli):
        frames = await receive_until(socket, lambda f: f["type"] == "activity" and f["event"]["kind"] == "assigned")
        rows = [f for f in frames if f["type"] == "inbox"]
        assert rows[-1]["conversation"]["assignee"] == "Eli"
    await eli.send_json_to({"type": "assign", "conversation_id": conversation_id, "assignee": "me"})
    await eli.send_json_to({"type": "assign", "conversation_id": conversation_id, "assignee": "nobody"})
    error = (await receive_until(eli, "error"))[-1]
    assert error["code"] == "invalid_assignee"
    assert await chat.receive_nothing(timeout=0.3)  # the customer hears nothing of it
    for socket in (chat, dana, eli):
        await socket.disconnect()


# Presence and round-robin auto-assignment.


def online(*users: User) -> None:
    for user in users:
        services.presence_touch(user_id=user.id, channel_name=f"test-{user.id}")


def ask_for_person(name: str) -> Conversation:
    conversation = Conversation.objects.create(customer=Customer.objects.create(display_name=name))
    chat_services.message_send(conversation=conversation, text="I want a human please")
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.WAITING
    return conversation


@pytest.fixture
def auto_assign(settings: Any, django_capture_on_commit_callbacks: Any) -> Any:
    settings.INBOX_AUTO_ASSIGN = True
    return django_capture_on_commit_callbacks


def test_handoffs_go_round_robin_to_the_agents_online(
    auto_assign: Any, agent_user: User, second_agent: User, admin_user: User, plain_user: User
) -> None:
    online(agent_user, second_agent, plain_user)  # the plain user is no agent: never picked
    picked = []
    for name in ("A", "B", "C"):
        with auto_assign(execute=True):
            conversation = ask_for_person(name)
        picked.append(Conversation.objects.get(id=conversation.id).assignee_id)
    # Never assigned first (by id), then whoever was assigned least recently.
    assert picked == [agent_user.id, second_agent.id, agent_user.id]
    event = ConversationEvent.objects.filter(conversation=conversation, kind="assigned").get()
    assert (event.actor_id, event.assignee_id) == (None, agent_user.id)  # the system assigned it


def test_an_agent_who_went_offline_is_not_picked(auto_assign: Any, agent_user: User, second_agent: User) -> None:
    online(agent_user, second_agent)
    services.presence_drop(user_id=agent_user.id, channel_name=f"test-{agent_user.id}")
    with auto_assign(execute=True):
        conversation = ask_for_person("A")
    assert Conversation.objects.get(id=conversation.id).assignee_id == second_agent.id


def test_presence_lapses_after_its_ttl(auto_assign: Any, settings: Any, agent_user: User) -> None:
    settings.INBOX_PRESENCE_TTL_S = -1  # already lapsed: a socket that died without closing
    online(agent_user)
    assert services.agents_online() == set()
    with auto_assign(execute=True):
        conversation = ask_for_person("A")
    assert Conversation.objects.get(id=conversation.id).assignee_id is None  # nobody online: Unassigned


def test_without_the_setting_nothing_is_auto_assigned(
    settings: Any, django_capture_on_commit_callbacks: Any, agent_user: User
) -> None:
    settings.INBOX_AUTO_ASSIGN = False
    online(agent_user)
    with django_capture_on_commit_callbacks(execute=True):
        conversation = ask_for_person("A")
    assert Conversation.objects.get(id=conversation.id).assignee_id is None


def test_an_already_assigned_conversation_is_left_alone(auto_assign: Any, agent_user: User, second_agent: User) -> None:
    online(second_agent)
    conversation = Conversation.objects.create(customer=Customer.objects.create(), assignee=agent_user)
    with auto_assign(execute=True):
        chat_services.handoff_request(conversation=conversation)
    assert Conversation.objects.get(id=conversation.id).assignee_id == agent_user.id


@pytest.mark.django_db(transaction=True)
async def test_an_open_agent_socket_counts_as_online_until_it_closes(agent_user: User, second_agent: User) -> None:
    dana = await open_agent(agent_user)
    assert await database_sync_to_async(services.agents_online)() == {agent_user.id}
    await dana.send_json_to({"type": "presence"})  # the page's heartbeat: no answer, no error
    assert await dana.receive_nothing(timeout=0.2)
    await dana.disconnect()
    assert await database_sync_to_async(services.agents_online)() == set()


def test_read_marks_go_to_the_agents_own_group(
    conversation: Conversation, agent_user: User, capture_events: CaptureEvents
) -> None:
    with capture_events() as sent:
        services.conversation_read(conversation=conversation, user=agent_user)
    assert [e.group for e in sent.events] == [events.agent_group(agent_user.id)]
    assert sent.events[0].handler == events.AGENTS_HANDLER  # only agent consumers handle it
    assert events.for_customer(sent.events[0].payload) is None
