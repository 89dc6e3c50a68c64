"""Shared fixtures: the personas every test speaks as, and the real services they talk to.

Tests use the real Redis (channel layer and request stream) under a key prefix of their own, so a
running `make run` on the same Redis is never disturbed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
import redis
from django.conf import settings

from tests.capture import capture_events  # noqa: F401 (a fixture every test may ask for)

# Set before anything reaches Redis (the channel layer is built on first use); test subprocesses
# inherit them through the environment.
TEST_PREFIX = f"test-{uuid.uuid4().hex[:8]}"
os.environ["REDIS_KEY_PREFIX"] = os.environ["CHANNEL_PREFIX"] = settings.REDIS_KEY_PREFIX = TEST_PREFIX
settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = TEST_PREFIX

# This process itself takes a new PostgreSQL connection for each use, as Django's tests expect:
# with the pool (chatbot/settings.py), a connection a test thread took and never gave back (a
# thread that ends holding it) stays taken, and ten of them starve every later test. The live
# systems, processes of their own, keep the pool as deployments run it.
if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
    settings.DATABASES["default"].get("OPTIONS", {}).pop("pool", None)
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0


@pytest.fixture(scope="session", autouse=True)
def _database_thread_closed(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """Connections are kept (DATABASE_CONN_MAX_AGE), and the sockets' database calls in this
    process all ran on asgiref's one executor thread: close its connection before the test
    database is dropped, which PostgreSQL refuses while a session is still connected."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    with django_db_blocker.unblock():
        SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    yield client
    for key in client.scan_iter(f"{settings.REDIS_KEY_PREFIX}:*"):
        client.delete(key)


@pytest.fixture
def clean_redis(redis_client: redis.Redis) -> redis.Redis:
    """The request stream and heartbeat, emptied: each test starts with no queued work."""
    for key in redis_client.scan_iter(f"{settings.REDIS_KEY_PREFIX}:*"):
        redis_client.delete(key)
    return redis_client


@pytest.fixture(autouse=True)
def _fresh_login_throttle(redis_client: redis.Redis) -> Iterator[None]:
    """Failed-login counts live in Redis under this run's prefix: none left from an earlier test,
    none left for a later one (a throttled "dana" would break every sign-in after it). Never the
    cache's clear(): on Redis that empties the whole database."""
    from conversations.login_throttle import counts

    def forget() -> None:
        for key in redis_client.scan_iter(counts().make_key("*")):
            redis_client.delete(key)

    forget()
    yield
    forget()


@pytest.fixture(autouse=True)
def _fresh_chat_limits(redis_client: redis.Redis) -> Iterator[None]:
    """The chat's per-address and per-customer counts (conversations/limits.py) start from nothing
    in each test: every test socket and page comes from one address, and would add up otherwise."""
    from conversations.limits import keys_pattern

    def forget() -> None:
        for key in redis_client.scan_iter(keys_pattern()):
            redis_client.delete(key)

    forget()
    yield
    forget()


@pytest.fixture(autouse=True)
def _fresh_local_cache() -> Iterator[None]:
    """The default cache is per process (the chat pages' suggested questions): nothing one test
    counted is served to the next."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _fresh_channel_layer() -> Iterator[None]:
    """Each async test runs in an event loop of its own; a cached channel layer keeps locks bound
    to the previous one ("bound to a different event loop"). Cleared before and after each test."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def knowledge_scheduled() -> Iterator[list[int]]:
    """The message ids whose teaching was sent to Celery (``knowledge_suggest``), in order: no
    test puts a task on the real broker, where a running Celery worker would take it."""
    from conversations.knowledge import tasks

    scheduled: list[int] = []
    with mock.patch.object(tasks.knowledge_suggest, "delay", side_effect=scheduled.append):
        yield scheduled


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def agent_user(db: Any) -> Any:
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user("dana", password="a-long-agent-password", first_name="Dana")
    user.groups.add(Group.objects.get_or_create(name="agents")[0])
    return user


@pytest.fixture
def second_agent(db: Any) -> Any:
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user("eli", password="a-long-agent-password", first_name="Eli")
    user.groups.add(Group.objects.get_or_create(name="agents")[0])
    return user


@pytest.fixture
def plain_user(db: Any) -> Any:
    from django.contrib.auth.models import User

    return User.objects.create_user("pat", password="a-long-user-password")


@pytest.fixture
def customer(db: Any) -> Any:
    from conversations.models import Customer

    return Customer.objects.create(display_name="Alice")


@pytest.fixture
def second_customer(db: Any) -> Any:
    from conversations.models import Customer

    return Customer.objects.create(display_name="Bob")


@pytest.fixture
def conversation(customer: Any) -> Any:
    from conversations.models import Conversation

    return Conversation.objects.create(customer=customer)


@pytest.fixture
def bot_reply(conversation: Any) -> Any:
    """A bot reply in ``conversation``, answered through the services the worker calls."""
    from conversations.chat import services as chat_services
    from conversations.worker import services as worker_services

    reply = chat_services.message_send(conversation=conversation, text="hi").bot_message
    worker_services.reply_claim(message_id=reply.id)
    return worker_services.reply_finish(message_id=reply.id, text="Hello", finish_reason="stop", token_count=1)


@pytest.fixture(scope="session")
def live_system(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Any]:
    """uvicorn and the real inference worker as processes on the test database (tests/e2e/live.py)."""
    from tests.e2e.live import LiveSystem

    system = LiveSystem()
    yield system
    system.stop()


@pytest.fixture(scope="module")
def fake_system(browser: Any, django_db_setup: Any, django_db_blocker: Any) -> Iterator[Any]:
    """uvicorn and the scripted fake inference worker, for browser tests of the pages around the model."""
    from tests.e2e.live import LiveSystem

    system = LiveSystem(fake=True)
    yield system
    system.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Real headless Chromium (tests/e2e/browser.py). Module-scoped: Playwright's sync API keeps an
    event loop running in this thread while the browser is open, which asyncio tests in later
    modules need gone."""
    from tests.e2e.browser import launch

    yield from launch()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The real-vLLM tests run last, together: their one server (``vllm_server``, session-scoped)
    then starts just before them and stops with the session, instead of idling beside every test
    after the first of them (its CPU worker polls: about a tenth of a core on these machines)."""
    items.sort(key=lambda item: item.get_closest_marker("vllm") is not None)  # stable: order kept


@pytest.fixture(scope="session")
def vllm_server() -> Iterator[Any]:
    """One real vLLM server for the session (tests/e2e/vllm.py): its venv is built first if its
    stamp is stale. Skipped, saying why, only where the venv cannot be built (no PyPI, no torch
    wheel); ``REQUIRE_VLLM=1`` (CI) makes that a failure instead."""
    from chatbot import vllm_server as setup
    from tests.e2e.vllm import start_vllm

    try:
        setup.setup()
    except Exception as error:  # noqa: BLE001 - any reason the install failed is the skip's reason
        if os.environ.get("REQUIRE_VLLM") == "1":
            raise
        pytest.skip(f"the vLLM venv ({setup.VENV}) cannot be built here: {error}")
    server = start_vllm()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def trained_adapter(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A peft adapter trained for real in two steps (tests/e2e/vllm.py), shared by the session."""
    from tests.e2e.vllm import train_tiny_adapter

    return train_tiny_adapter(tmp_path_factory.mktemp("trained") / "adapter")
