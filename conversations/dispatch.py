"""The path between the web side and the inference worker, over Redis: both halves of the protocol.

Generation requests go on a Redis stream read by a consumer group: an entry stays pending until
the worker acknowledges it, so a request survives a worker that is down or killed mid-reply.
Stop requests go out on a pub/sub channel, since only a worker that is decoding needs them.
Each worker keeps two heartbeat keys: the shared one (a worker is up: the chat says so) and its
own (it is alive: nobody takes its entries).

The web side's half is synchronous (``generation_request``, ``generation_cancel``,
``worker_online``); the worker's half takes a ``redis.asyncio`` client. An entry's fields are
written by ``entry_fields`` and read by ``entry_message_id``, nowhere else.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Mapping
from typing import Any, TypedDict, cast

import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.typing import EncodableT, FieldT, StreamIdT


def key(name: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}:{name}"


GENERATE_STREAM = "generate"
CANCEL_CHANNEL = "cancel"
HEARTBEAT = "worker:heartbeat"
SWEEP_LOCK = "worker:sweep"
WORKER_GROUP = "inference"

HEARTBEAT_TTL_S = 10  # a worker silent this long is dead: its unfinished entries are claimed

# redis-py types each stream reply for both protocols and both encodings; these clients speak RESP2
# and decode to str, so an entry is (entry id, fields), with no fields for one deleted since.
Entry = tuple[str, dict[str, str] | None]


class Pending(TypedDict):
    message_id: str  # the entry's id
    consumer: str


def alive_key(consumer: str) -> str:
    """Set by each worker while it lives; entries of a consumer without one may be claimed."""
    return key(f"worker:alive:{consumer}")


def entry_fields(message_id: int) -> dict[FieldT, EncodableT]:
    return {"message_id": str(message_id)}


def entry_message_id(fields: Mapping[str, str]) -> int | None:
    """The reply an entry asks for; None for an entry this protocol did not write."""
    value = fields.get("message_id", "")
    return int(value) if value.isdigit() else None


@functools.cache
def _client(url: str, timeout_s: float) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)


def client(*, timeout_s: float = 5.0) -> redis.Redis:
    """The web side's Redis client; checks that must answer fast (health, limits) ask a shorter timeout."""
    return _client(settings.REDIS_URL, timeout_s)


def generation_request(*, message_id: int) -> None:
    client().xadd(key(GENERATE_STREAM), entry_fields(message_id))


def generation_cancel(*, message_id: int) -> None:
    client().publish(key(CANCEL_CHANNEL), str(message_id))


def worker_online() -> bool:
    try:
        return bool(client().exists(key(HEARTBEAT)))
    except redis.RedisError:
        return False


def _is_nogroup(error: redis.ResponseError) -> bool:
    return str(error).startswith("NOGROUP")


async def group_ensure(conn: aioredis.Redis) -> None:
    """Create the consumer group (and the stream); a group made by another worker is kept."""
    try:
        await conn.xgroup_create(key(GENERATE_STREAM), WORKER_GROUP, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


async def entries_read(
    conn: aioredis.Redis, *, consumer: str, cursor: str, block_ms: int = 500
) -> list[tuple[str, int | None]]:
    """(entry id, reply id) delivered to ``consumer``: its own pending ones after ``cursor`` (an id),
    or new ones (``">"``). A group that is gone (Redis restarted empty) is created again."""
    try:
        response = await conn.xreadgroup(
            WORKER_GROUP, consumer, {key(GENERATE_STREAM): cursor}, count=16, block=block_ms
        )
    except redis.ResponseError as error:
        if not _is_nogroup(error):
            raise
        await group_ensure(conn)
        return []
    entries = cast(list[tuple[str, list[Entry]]], response)[0][1] if response else []
    return [(entry_id, entry_message_id(fields or {})) for entry_id, fields in entries]


async def entries_pending(conn: aioredis.Redis, *, count: int = 100) -> list[tuple[str, str]]:
    """(entry id, consumer) of entries delivered and not yet acknowledged."""
    try:
        pending = await conn.xpending_range(key(GENERATE_STREAM), WORKER_GROUP, min="-", max="+", count=count)
    except redis.ResponseError as error:
        if not _is_nogroup(error):
            raise
        await group_ensure(conn)
        return []
    return [(p["message_id"], p["consumer"]) for p in cast(list[Pending], pending)]


async def entries_claim(
    conn: aioredis.Redis, *, consumer: str, entry_ids: list[str], min_idle_ms: int
) -> list[tuple[str, int | None]]:
    """Take entries delivered to a dead consumer. The idle floor makes a race between two live
    workers harmless: the first claim resets it, so the second claims nothing."""
    ids: list[StreamIdT] = list(entry_ids)
    claimed = await conn.xclaim(
        key(GENERATE_STREAM), WORKER_GROUP, consumer, min_idle_time=min_idle_ms, message_ids=ids
    )
    return [(entry_id, entry_message_id(fields)) for entry_id, fields in cast(list[Entry], claimed) if fields]


async def entry_ack(conn: aioredis.Redis, *, entry_id: str) -> None:
    """Acknowledge and delete an answered entry; one already gone with its group is answered too."""
    stream = key(GENERATE_STREAM)
    try:
        await conn.xack(stream, WORKER_GROUP, entry_id)
    except redis.ResponseError as error:
        if not _is_nogroup(error):
            raise
    await conn.xdel(stream, entry_id)


async def entry_add(conn: aioredis.Redis, *, message_id: int) -> None:
    await conn.xadd(key(GENERATE_STREAM), entry_fields(message_id))


async def queued_message_ids(conn: aioredis.Redis) -> set[int]:
    entries = cast(list[Entry], await conn.xrange(key(GENERATE_STREAM)))
    ids = (entry_message_id(fields or {}) for _, fields in entries)
    return {message_id for message_id in ids if message_id is not None}


async def sweep_lock(conn: aioredis.Redis, *, consumer: str, hold_ms: int) -> bool:
    """One worker at a time sweeps for lost requests."""
    return bool(await conn.set(key(SWEEP_LOCK), consumer, nx=True, px=hold_ms))


async def consumer_alive(conn: aioredis.Redis, consumer: str) -> bool:
    return bool(await conn.exists(alive_key(consumer)))


async def consumer_taken(conn: aioredis.Redis, consumer: str, *, beat_every_s: float) -> bool:
    """Whether a live worker already goes by ``consumer``. A key left by a worker killed a moment
    ago stays put until it expires; a live worker's changes at its next beat, so the wait is
    at most the key's time to live."""
    first = await conn.get(alive_key(consumer))
    deadline = time.monotonic() + HEARTBEAT_TTL_S + 1
    while first is not None and time.monotonic() < deadline:
        await asyncio.sleep(min(0.2, beat_every_s))
        now = await conn.get(alive_key(consumer))
        if now is None:
            return False
        if now != first:
            return True
    return first is not None


async def heartbeat_send(conn: aioredis.Redis, *, consumer: str, status: dict[str, Any]) -> None:
    async with conn.pipeline(transaction=False) as pipe:
        pipe.set(key(HEARTBEAT), json.dumps(status), ex=HEARTBEAT_TTL_S)
        pipe.set(alive_key(consumer), str(status["at"]), ex=HEARTBEAT_TTL_S)
        await pipe.execute()


async def heartbeat_clear(conn: aioredis.Redis, *, consumer: str) -> None:
    await conn.delete(key(HEARTBEAT), alive_key(consumer))
