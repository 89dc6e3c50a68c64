"""Shared fixtures: the personas every test speaks as, and the real services they talk to.

Tests use the real Redis (channel layer and request stream) under a key prefix of their own, so a
running `make run` on the same Redis is never disturbed.
"""

from __future__ import annotations

import os
import uuid

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings

# Set before anything reaches Redis (the channel layer is built on first use); test subprocesses
# inherit them through the environment.
TEST_PREFIX = f"test-{uuid.uuid4().hex[:8]}"
os.environ["REDIS_KEY_PREFIX"] = os.environ["CHANNEL_PREFIX"] = settings.REDIS_KEY_PREFIX = TEST_PREFIX
settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = TEST_PREFIX


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
