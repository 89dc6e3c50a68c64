"""The personas of the agent workspace tests: two customers (from tests/conftest.py), an agent,
an admin (pytest-django's ``admin_user``) and a signed-in user who is not an agent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.cache import cache
from django.test import Client

from conversations.models import Conversation, Customer, Message


@pytest.fixture(autouse=True)
def _fresh_throttle() -> None:
    cache.clear()  # the per-process cache holds the failed-login counts


@pytest.fixture(autouse=True)
def _fresh_channel_layer() -> Iterator[None]:
    """Each test runs in an event loop of its own; a cached layer keeps locks bound to the last one.

    Cleared before and after, so neither these tests nor the ones that follow inherit one.
    """
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def agent_user(db: Any) -> User:
    user = User.objects.create_user("dana", password="a-long-agent-password", first_name="Dana")
    user.groups.add(Group.objects.get_or_create(name="agents")[0])
    return user


@pytest.fixture
def second_agent(db: Any) -> User:
    user = User.objects.create_user("eli", password="a-long-agent-password", first_name="Eli")
    user.groups.add(Group.objects.get_or_create(name="agents")[0])
    return user


@pytest.fixture
def plain_user(db: Any) -> User:
    return User.objects.create_user("pat", password="a-long-user-password")


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
