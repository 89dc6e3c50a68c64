"""Per-address and per-customer limits on the chat, counted in Redis so every web process counts
together (docs/settings.md, "The chat"). Keys lie under ``REDIS_KEY_PREFIX``.

Address limits use fixed windows: one counter per address and window, gone when the window ends.
Open sockets per customer are a sorted set of channel names, each refreshed by its socket while it
lives, so a web process that dies without saying goodbye stops counting within ``SOCKET_TTL_S``.

Redis down: every limit fails open, with a warning, as the login throttle does: the chat keeps
working unthrottled rather than refusing everyone.

The client address is REMOTE_ADDR (a socket's ``scope["client"]``), or, behind TRUSTED_PROXY_HOPS
reverse proxies, the address the outermost trusted proxy put into X-Forwarded-For (entries further
left are the client's own to forge). An IPv6 client counts by its /64, which one host can rotate
through freely.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from django.conf import settings

from . import dispatch

log = logging.getLogger(__name__)

SOCKET_TTL_S = 90  # an open socket's entry lives this long unless its socket refreshes it
SOCKET_REFRESH_S = 30

T = TypeVar("T")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_ip(remote: str, forwarded_for: str) -> tuple[IPAddress | None, str]:
    """The client's address (None when it is not an IP address) and what limits count it by."""
    address = remote
    hops = settings.TRUSTED_PROXY_HOPS
    if hops > 0:
        # Each proxy appends the address it was reached from; the nearest one is REMOTE_ADDR.
        forwarded = [a.strip() for a in forwarded_for.split(",") if a.strip()]
        if len(forwarded) >= hops:
            address = forwarded[-hops]
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return None, address[:64] or "unknown"
    mapped = getattr(parsed, "ipv4_mapped", None)  # ::ffff:a.b.c.d is the IPv4 client a.b.c.d
    if mapped is not None:
        return mapped, str(mapped)
    if parsed.version == 6:
        network = ipaddress.ip_network(f"{parsed}/64", strict=False)
        return network.network_address, str(network)
    return parsed, str(parsed)


def request_ip(request: Any) -> tuple[IPAddress | None, str]:
    """``client_ip`` of an HTTP request."""
    return client_ip(request.META.get("REMOTE_ADDR", ""), request.META.get("HTTP_X_FORWARDED_FOR", ""))


def scope_ip(scope: dict[str, Any]) -> tuple[IPAddress | None, str]:
    """``client_ip`` of a websocket's ASGI scope."""
    client = scope.get("client") or ("", 0)
    headers = dict(scope.get("headers") or [])
    return client_ip(str(client[0] or ""), headers.get(b"x-forwarded-for", b"").decode("latin-1"))


def _redis() -> redis.Redis:
    return dispatch.client(timeout_s=1.0)


def _key(*parts: str) -> str:
    return ":".join([settings.REDIS_KEY_PREFIX, "limits", *parts])


@contextmanager
def redis_down_tolerated(what: str, *, limiter: str = "chat limits") -> Iterator[None]:
    """Limits fail open: while Redis is down, nobody is limited (chat, sign-in), and the log says so."""
    try:
        yield
    except (redis.RedisError, OSError):
        log.warning("%s could not %s: Redis did not answer; not limiting", limiter, what, exc_info=True)


def _tolerant(what: str, default: T, call: Callable[[], T]) -> T:
    with redis_down_tolerated(what):
        return call()
    return default


def address_take(*, what: str, address: str, limit: int, window_s: int) -> bool:
    """Count one more ``what`` from ``address``: False once past ``limit`` in the current window."""

    def take() -> bool:
        window = int(time.time() // window_s)
        key = _key(what, address, str(window))
        with _redis().pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, window_s)
            count = int(pipe.execute()[0])
        return count <= limit

    return _tolerant(f"count {what}", True, take)


def customer_create_allowed(*, address: str) -> bool:
    return address_take(
        what="customers",
        address=address,
        limit=settings.CHAT_ADDRESS_CUSTOMERS,
        window_s=settings.CHAT_ADDRESS_CUSTOMERS_WINDOW_S,
    )


def socket_open_allowed(*, address: str) -> bool:
    return address_take(
        what="sockets",
        address=address,
        limit=settings.CHAT_ADDRESS_SOCKETS,
        window_s=settings.CHAT_ADDRESS_WINDOW_S,
    )


def frame_allowed(*, address: str) -> bool:
    return address_take(
        what="frames",
        address=address,
        limit=settings.CHAT_ADDRESS_FRAMES,
        window_s=settings.CHAT_ADDRESS_WINDOW_S,
    )


def socket_register(*, customer_id: str, channel: str) -> bool:
    """Count this socket among the customer's open ones; False (and not counted) past the bound."""

    def register() -> bool:
        key, now = _key("open", customer_id), time.time()
        with _redis().pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now - SOCKET_TTL_S)
            pipe.zadd(key, {channel: now})
            pipe.zcard(key)
            pipe.expire(key, SOCKET_TTL_S)
            count = int(pipe.execute()[2])
        if count <= settings.CHAT_SOCKETS_PER_CUSTOMER:
            return True
        _redis().zrem(key, channel)
        return False

    return _tolerant("count open sockets", True, register)


def socket_refresh(*, customer_id: str, channel: str) -> None:
    def refresh() -> None:
        key = _key("open", customer_id)
        with _redis().pipeline(transaction=True) as pipe:
            pipe.zadd(key, {channel: time.time()})
            pipe.expire(key, SOCKET_TTL_S)
            pipe.execute()

    _tolerant("refresh an open socket", None, refresh)


def socket_unregister(*, customer_id: str, channel: str) -> None:
    _tolerant("forget a closed socket", None, lambda: _redis().zrem(_key("open", customer_id), channel))


def keys_pattern() -> str:
    """Every key these limits keep, for tests to forget them between cases."""
    return _key("*")
