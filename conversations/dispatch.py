"""The web side's end of the path to the inference worker, over Redis.

Generation requests go on a Redis stream read by a consumer group: an entry stays pending until
the worker acknowledges it, so a request survives a worker that is down or killed mid-reply.
Stop requests go out on a pub/sub channel, since only a worker that is decoding needs them.
"""

from __future__ import annotations

import functools

import redis
from django.conf import settings


def key(name: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}:{name}"


GENERATE_STREAM = "generate"
CANCEL_CHANNEL = "cancel"
HEARTBEAT = "worker:heartbeat"
SWEEP_LOCK = "worker:sweep"
WORKER_GROUP = "inference"


def alive_key(consumer: str) -> str:
    """Set by each worker while it lives; entries of a consumer without one may be claimed."""
    return key(f"worker:alive:{consumer}")


@functools.cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)


def client() -> redis.Redis:
    return _client(settings.REDIS_URL)


def generation_request(*, message_id: int) -> None:
    client().xadd(key(GENERATE_STREAM), {"message_id": str(message_id)})


def generation_cancel(*, message_id: int) -> None:
    client().publish(key(CANCEL_CHANNEL), str(message_id))


def worker_online() -> bool:
    try:
        return bool(client().exists(key(HEARTBEAT)))
    except redis.RedisError:
        return False
