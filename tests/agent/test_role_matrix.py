"""Every URL and socket route × anonymous, customer A, customer B, a non-agent user, an agent, an admin."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from conversations.models import Conversation, Correction, Feedback

from .conftest import add_messages, customer_client, user_client
from .helpers import socket_for

PERSONAS = ["anonymous", "customer_a", "customer_b", "plain_user", "agent", "admin"]
AGENT_ONLY = {"anonymous": 302, "customer_a": 302, "customer_b": 302, "plain_user": 403, "agent": 200, "admin": 200}
EVERYONE = dict.fromkeys(PERSONAS, 200)
STAFF_ONLY = {**dict.fromkeys(PERSONAS, 302), "admin": 200}

# (method, url template, expected status by persona)
SIGNED_IN_OUT = dict.fromkeys(PERSONAS, 302)
ROUTES = [
    ("get", "/", EVERYONE),
    ("get", "/healthz", EVERYONE),
    ("get", "/static/chat.js", EVERYONE),
    ("get", "/static/agent.js", EVERYONE),
    ("get", "/accounts/login/", EVERYONE),
    ("post", "/accounts/logout/", SIGNED_IN_OUT),
    ("get", "/agent/", AGENT_ONLY),
    ("get", "/agent/?q=hello&status=bot", AGENT_ONLY),
    ("get", "/agent/conversations/{conversation}/", AGENT_ONLY),
    ("get", "/agent/export.jsonl", AGENT_ONLY),
    ("get", "/agent/export.csv?id={conversation}", AGENT_ONLY),
    ("post", "/agent/conversations/{conversation}/review", AGENT_ONLY),
    ("post", "/agent/messages/{reply}/feedback", AGENT_ONLY),
    ("post", "/agent/messages/{reply}/correction", AGENT_ONLY),
    ("get", "/admin/", STAFF_ONLY),
    ("get", "/training/", STAFF_ONLY),
]


@pytest.fixture
def world(customer: Any, second_customer: Any, agent_user: Any, plain_user: Any, admin_user: Any) -> dict[str, Any]:
    """Customer A's conversation with a bot reply, and a way to speak as each persona."""
    conversation = Conversation.objects.create(customer=customer)
    Conversation.objects.create(customer=second_customer)
    _, reply = add_messages(conversation, ("customer", "hello"), ("bot", "Hi!"))
    return {
        "conversation": conversation,
        "reply": reply,
        "users": {"plain_user": plain_user, "agent": agent_user, "admin": admin_user},
        "customers": {"customer_a": customer, "customer_b": second_customer},
    }


def client_for(persona: str, world: dict[str, Any]) -> Client:
    if persona in world["customers"]:
        return customer_client(world["customers"][persona])
    if persona in world["users"]:
        return user_client(world["users"][persona])
    return Client()


@pytest.mark.django_db
@pytest.mark.usefixtures("clean_redis")
@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize(("method", "url", "expected"), ROUTES, ids=[f"{m} {u}" for m, u, _ in ROUTES])
def test_each_route_admits_only_its_roles(
    world: dict[str, Any], persona: str, method: str, url: str, expected: dict[str, int]
) -> None:
    url = url.format(conversation=world["conversation"].id, reply=world["reply"].id)
    data = {"positive": "0", "reason": "rude", "text": "fixed", "note": "n", "tags": "t"}
    response = getattr(client_for(persona, world), method)(
        url, data if method == "post" else None, HTTP_ACCEPT="application/json"
    )
    assert response.status_code == expected[persona]
    if expected[persona] == 302 and url.startswith("/agent/"):
        assert response["Location"].startswith("/accounts/login/?next=")
    if method == "post" and expected[persona] != 200:
        world["conversation"].refresh_from_db()
        assert not Feedback.objects.exists() and not Correction.objects.exists() and world["conversation"].note == ""


@database_sync_to_async
def make_world(customer: Any, second_customer: Any, users: dict[str, Any]) -> dict[str, Any]:
    conversation = Conversation.objects.create(customer=customer)
    own_b = Conversation.objects.create(customer=second_customer)
    return {"a": conversation, "b": own_b}


async def connect(persona: str, path: str, users: dict[str, Any], customers: dict[str, Any], query: str = "") -> Any:
    socket = await socket_for(path, customer=customers.get(persona), user=users.get(persona), query=query)
    connected, code = await socket.connect()
    first = await socket.receive_json_from() if connected else None
    await socket.disconnect()
    return connected, code, first


CHAT_EXPECTED = {
    "anonymous": 4401,
    "customer_a": "own",
    "customer_b": "own",
    "plain_user": 4401,
    "agent": 4401,
    "admin": 4401,
}
AGENT_EXPECTED = {
    "anonymous": 4401,
    "customer_a": 4401,
    "customer_b": 4401,
    "plain_user": 4403,
    "agent": "hello",
    "admin": "hello",
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("clean_redis")
@pytest.mark.parametrize("persona", PERSONAS)
async def test_each_socket_admits_only_its_roles(
    persona: str, customer: Any, second_customer: Any, agent_user: Any, plain_user: Any, admin_user: Any
) -> None:
    users = {"plain_user": plain_user, "agent": agent_user, "admin": admin_user}
    customers = {"customer_a": customer, "customer_b": second_customer}
    own = await make_world(customer, second_customer, users)

    connected, code, first = await connect(persona, "/ws/chat/", users, customers)
    if CHAT_EXPECTED[persona] == "own":
        assert connected and first["type"] == "history"
        mine = own["a"] if persona == "customer_a" else own["b"]
        assert first["conversation"]["id"] == str(mine.id)
    else:
        assert (connected, code) == (False, CHAT_EXPECTED[persona])

    # Asking for customer A's conversation by id: only customer A gets it.
    connected, code, first = await connect(persona, "/ws/chat/", users, customers, query=f"conversation={own['a'].id}")
    if persona == "customer_a":
        assert connected and first["conversation"]["id"] == str(own["a"].id)
    else:
        assert not connected and code in (4401, 4404)

    connected, code, first = await connect(persona, "/ws/agent/", users, customers)
    if AGENT_EXPECTED[persona] == "hello":
        assert connected and first["type"] == "hello"
    else:
        assert (connected, code) == (False, AGENT_EXPECTED[persona])
