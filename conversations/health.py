"""Whether the parts the chat needs are up: the database, Redis, an inference worker.

`/healthz` reports each part (docs/deployment.md), `serve` waits on it before it says "Ready", and
the chat tells a customer whether the assistant is online, restarting (serve is bringing its worker
back: a key serve sets, with a TTL so a dead serve never leaves it behind) or offline.

Every check has a short timeout (HEALTH_CHECK_TIMEOUT_S), so a dead database or Redis makes the
answer "down", never a hung request.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

import redis
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.utils import load_backend

from . import dispatch

WorkerState = Literal["online", "restarting", "offline"]
RESTARTING = "serve:restarting"

WORKER_OFFLINE_NOTICE = {
    "type": "notice",
    "code": "worker_offline",
    "detail": (
        "The assistant is not running right now. Your message is saved and will be answered as soon as it is back."
    ),
}
WORKER_RESTARTING_NOTICE = {
    "type": "notice",
    "code": "worker_restarting",
    "detail": "The assistant is restarting; your message is saved and will be answered in a moment.",
}


def _redis() -> redis.Redis:
    return dispatch.client(timeout_s=settings.HEALTH_CHECK_TIMEOUT_S)


def _why(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"down: {type(error).__name__}: {lines[0] if lines else ''}"[:300]


def database_status() -> str:
    """ "ok", or "down: <why>", from a connection of its own with short timeouts (the request's
    connection keeps its long SQLite lock wait), reading a table that only a migrated database has."""
    wrapper = _quick_connection()
    try:
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1 FROM django_migrations LIMIT 1")
            cursor.fetchall()
    except DatabaseError as error:
        return _why(error)
    finally:
        wrapper.close()
    return "ok"


def _quick_connection() -> Any:
    settings_dict = {**connections[DEFAULT_DB_ALIAS].settings_dict}
    options = {**settings_dict.get("OPTIONS", {})}
    options.pop("pool", None)  # a connection of its own, not one of the process's pool (keyed by alias)
    timeout = settings.HEALTH_CHECK_TIMEOUT_S
    if settings_dict["ENGINE"].endswith("sqlite3"):
        options["timeout"] = timeout
    elif settings_dict["ENGINE"].endswith("postgresql"):
        options["connect_timeout"] = max(math.ceil(timeout), 2)  # libpq takes whole seconds, at least 2
        options.setdefault("options", f"-c statement_timeout={int(timeout * 1000)}")
    settings_dict["OPTIONS"] = options
    return load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, DEFAULT_DB_ALIAS)


def redis_status() -> str:
    try:
        _redis().ping()
    except (redis.RedisError, OSError) as error:
        return _why(error)
    return "ok"


def worker_state() -> WorkerState:
    """ "restarting" while serve brings its worker back (even if the dead one's heartbeat has not
    expired yet), "online" while a worker's heartbeat lives, "offline" otherwise (Redis down too)."""
    try:
        with _redis().pipeline(transaction=False) as pipe:
            pipe.exists(dispatch.key(RESTARTING))
            pipe.exists(dispatch.key(dispatch.HEARTBEAT))
            restarting, online = pipe.execute()
    except (redis.RedisError, OSError):
        return "offline"
    if restarting:
        return "restarting"
    return "online" if online else "offline"


def worker_notice(state: WorkerState) -> dict[str, Any] | None:
    """The notice a customer whose message was just queued gets, or None when a worker is online."""
    return {"restarting": WORKER_RESTARTING_NOTICE, "offline": WORKER_OFFLINE_NOTICE}.get(state)


def health_report() -> dict[str, Any]:
    """What /healthz answers: "down" when the web cannot serve (no database or no Redis), "degraded"
    when it serves but no worker answers yet, "ok" when everything is up."""
    database, redis_ = database_status(), redis_status()
    worker = worker_state() if redis_ == "ok" else "offline"
    if database != "ok" or redis_ != "ok":
        status = "down"
    else:
        status = "ok" if worker == "online" else "degraded"
    return {
        "status": status,
        "web": "ok",
        "database": database,
        "redis": redis_,
        "worker": worker,
        "worker_online": worker == "online",
    }


def worker_restarting_set(*, ttl_s: float) -> None:
    """Said by serve while it brings its worker back; it renews the key until the worker is online."""
    _redis().set(dispatch.key(RESTARTING), "1", px=int(ttl_s * 1000))


def worker_restarting_clear() -> None:
    _redis().delete(dispatch.key(RESTARTING))


def worker_beat_since(started_at: float) -> bool:
    """Whether a worker's heartbeat was written at or after ``started_at`` (a ``time.time()``): the
    restarted worker is up, not the dead one's heartbeat still waiting to expire. A heartbeat
    without a readable time counts as one."""
    value = _redis().get(dispatch.key(dispatch.HEARTBEAT))
    if value is None:
        return False
    try:
        beat = json.loads(value)["at"]
    except (ValueError, KeyError, TypeError):
        return True
    return not isinstance(beat, int | float) or beat >= started_at


def worker_restarting_announce() -> int:
    """Tell every customer whose reply is in flight that the assistant is restarting; how many."""
    from . import events
    from .models import Message

    conversation_ids = set(
        Message.objects.filter(role=Message.Role.BOT, status__in=Message.ACTIVE_STATUSES).values_list(
            "conversation_id", flat=True
        )
    )
    events.deliver([events.to_conversation(c, WORKER_RESTARTING_NOTICE) for c in conversation_ids])
    return len(conversation_ids)
