"""Helpers of the agent workspace tests. The personas (two customers, two agents, a signed-in
non-agent) live in tests/conftest.py; the admin is pytest-django's ``admin_user``."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from conversations.models import Conversation, Customer, Message


def customer_client(customer: Customer) -> Client:
    client = Client()
    session = client.session
    session["customer_id"] = str(customer.id)
    session.save()
    client.cookies["sessionid"] = session.session_key
    return client


def user_client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def agent_client(agent_user: User) -> Client:
    return user_client(agent_user)


def add_messages(conversation: Conversation, *pairs: tuple[str, str], **fields: Any) -> list[Message]:
    return [Message.objects.create(conversation=conversation, role=role, text=text, **fields) for role, text in pairs]


@pytest.fixture
def answered(conversation: Conversation) -> Conversation:
    """A conversation with one question and one finished bot reply."""
    add_messages(conversation, ("customer", "Where is my order?"), ("bot", "It ships tomorrow."))
    return conversation
