"""/healthz and the worker's state, against the real database and Redis, each made unusable for real."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import connections
from django.test import Client

from conversations import dispatch, health
from conversations.models import Conversation
from conversations.selectors import history_frame
from tests.e2e.live import free_port


@pytest.fixture(autouse=True)
def _a_prefix_of_its_own(settings: Any) -> None:
    """The session's live systems keep a worker beating under the test run's prefix: these tests
    need a Redis where no worker is, unless they put one there."""
    settings.REDIS_KEY_PREFIX = f"health-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def worker_beating(clean_redis: redis.Redis) -> redis.Redis:
    """The heartbeat a live worker keeps (conversations/worker.py)."""
    clean_redis.set(dispatch.key(dispatch.HEARTBEAT), json.dumps({"consumer": "test", "at": time.time()}), ex=10)
    return clean_redis


@pytest.fixture
def database_unusable(db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The database /healthz checks is one it cannot use: on SQLite a file another connection holds
    an exclusive lock on; on PostgreSQL a port nothing listens on. The test's own connection, open
    already, is untouched."""
    settings_dict = connections["default"].settings_dict
    if settings_dict["ENGINE"].endswith("sqlite3"):
        locked = tmp_path / "locked.sqlite3"
        holder = sqlite3.connect(locked, isolation_level=None)
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("CREATE TABLE django_migrations (id integer)")
        monkeypatch.setitem(settings_dict, "NAME", str(locked))
        yield
        holder.close()
    else:
        monkeypatch.setitem(settings_dict, "PORT", str(free_port()))
        yield


def test_it_answers_ok_when_the_database_redis_and_a_worker_are_up(
    client: Client, db: Any, worker_beating: Any
) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "web": "ok",
        "database": "ok",
        "redis": "ok",
        "worker": "online",
        "worker_online": True,
    }


def test_it_answers_503_naming_the_database_when_it_cannot_be_used(
    client: Client, clean_redis: Any, database_unusable: None, settings: Any
) -> None:
    started = time.monotonic()
    response = client.get("/healthz")
    assert time.monotonic() - started < settings.HEALTH_CHECK_TIMEOUT_S + 10  # a short timeout, not SQLite's 20 s
    assert response.status_code == 503
    report = response.json()
    assert report["status"] == "down"
    assert report["database"].startswith("down: ")
    assert report["redis"] == "ok"


def test_it_answers_503_naming_redis_when_redis_does_not_answer(client: Client, db: Any, settings: Any) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    report = response.json()
    assert report["status"] == "down"
    assert report["redis"].startswith("down: ")
    assert report["database"] == "ok"
    assert report["worker"] == "offline" and report["worker_online"] is False


def test_it_says_degraded_and_worker_offline_without_a_worker(client: Client, db: Any, clean_redis: Any) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["worker"] == "offline"
    assert response.json()["worker_online"] is False


def test_it_says_restarting_while_serve_brings_the_worker_back_even_before_the_old_heartbeat_expires(
    client: Client, db: Any, worker_beating: Any
) -> None:
    health.worker_restarting_set(ttl_s=10)
    report = client.get("/healthz").json()
    assert report["worker"] == "restarting" and report["worker_online"] is False
    assert report["status"] == "degraded"
    health.worker_restarting_clear()
    assert client.get("/healthz").json()["worker"] == "online"


def test_the_restarting_mark_expires_on_its_own(clean_redis: Any) -> None:
    health.worker_restarting_set(ttl_s=0.2)
    assert health.worker_state() == "restarting"
    deadline = time.monotonic() + 10
    while health.worker_state() != "offline" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert health.worker_state() == "offline"


def test_it_tells_a_connecting_customer_the_assistant_is_restarting(
    conversation: Conversation, clean_redis: Any
) -> None:
    health.worker_restarting_set(ttl_s=10)
    frame = history_frame(conversation)
    assert frame["worker"] == "restarting" and frame["worker_online"] is False
    assert health.worker_notice(health.worker_state()) == health.WORKER_RESTARTING_NOTICE


def test_a_heartbeat_from_before_the_restart_is_not_the_new_worker(worker_beating: Any) -> None:
    assert health.worker_beat_since(time.time() - 60)
    assert not health.worker_beat_since(time.time() + 60)
