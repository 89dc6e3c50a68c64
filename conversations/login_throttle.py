"""Failed-login throttling: after LOGIN_THROTTLE_FAILURES failures within LOGIN_THROTTLE_WINDOW_S,
by username or by client address, every attempt is refused until the window has passed.

Counts live in Django's cache. With the default per-process cache each web process counts on its
own; point CACHES at Redis to share the counts (docs/settings.md).
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest


def _keys(request: HttpRequest, username: str) -> list[str]:
    address = request.META.get("REMOTE_ADDR", "") or "unknown"
    return [f"login-failures:addr:{address}", f"login-failures:user:{username.strip().lower()[:150]}"]


def is_throttled(request: HttpRequest, username: str) -> bool:
    return any((cache.get(k) or 0) >= settings.LOGIN_THROTTLE_FAILURES for k in _keys(request, username))


def record_failure(request: HttpRequest, username: str) -> None:
    for key in _keys(request, username):
        # add() starts the window at the first failure; incr() keeps its expiry.
        if not cache.add(key, 1, timeout=settings.LOGIN_THROTTLE_WINDOW_S):
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.add(key, 1, timeout=settings.LOGIN_THROTTLE_WINDOW_S)


def record_success(request: HttpRequest, username: str) -> None:
    cache.delete(_keys(request, username)[1])
