"""Failed-login throttling: after LOGIN_THROTTLE_FAILURES failures within LOGIN_THROTTLE_WINDOW_S,
by username or by client address, every attempt is refused until the window has passed.

It sits in the authentication backend, so every login form (ours and the Django admin's) is
throttled alike. Counts live in Redis, in the cache alias ``login_throttle`` (chatbot/settings.py),
so every web process counts together; their keys lie under ``REDIS_KEY_PREFIX``.

The client address is REMOTE_ADDR, or, behind TRUSTED_PROXY_HOPS reverse proxies, the address the
outermost trusted proxy put into X-Forwarded-For, as the chat's limits take it (conversations/limits.py).
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import AbstractContextManager
from typing import Any

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import BaseCache, caches
from django.dispatch import receiver
from django.http import HttpRequest

from . import limits

CACHE_ALIAS = "login_throttle"

log = logging.getLogger(__name__)


def cache_key(key: str, key_prefix: str, version: int) -> str:
    """The cache's KEY_FUNCTION: REDIS_KEY_PREFIX is read at call time (tests set their own after
    the settings are loaded), so a test run never shares counts with a server on the same Redis."""
    return f"{settings.REDIS_KEY_PREFIX}:{key_prefix}:{version}:{key}"


def counts() -> BaseCache:
    """Where the counts live. Never ``clear()`` it: on Redis that empties the whole database."""
    return caches[CACHE_ALIAS]


def client_address(request: HttpRequest | None) -> str:
    """What the throttle counts a client by (conversations/limits.py, shared with the chat's limits)."""
    return "unknown" if request is None else limits.request_ip(request)[1]


def _keys(request: HttpRequest | None, username: str) -> list[str]:
    # Hashed: any username is a safe key, and none is kept in Redis in the clear.
    user = hashlib.sha256(username.strip().lower()[:150].encode()).hexdigest()[:32]
    return [f"failures:addr:{client_address(request)}", f"failures:user:{user}"]


def is_throttled(request: HttpRequest | None, username: str) -> bool:
    found: dict[str, Any] = {}
    with _redis_down_tolerated("check"):
        found = counts().get_many(_keys(request, username))
    return any((count or 0) >= settings.LOGIN_THROTTLE_FAILURES for count in found.values())


def record_failure(request: HttpRequest | None, username: str) -> None:
    cache = counts()
    with _redis_down_tolerated("count a failure"):
        for key in _keys(request, username):
            # add() starts the window at the first failure; incr() keeps its expiry.
            if not cache.add(key, 1, timeout=settings.LOGIN_THROTTLE_WINDOW_S):
                try:
                    cache.incr(key)
                except ValueError:  # expired between add and incr
                    cache.add(key, 1, timeout=settings.LOGIN_THROTTLE_WINDOW_S)


def record_success(request: HttpRequest | None, username: str) -> None:
    with _redis_down_tolerated("reset a count"):
        counts().delete(_keys(request, username)[1])


def _redis_down_tolerated(what: str) -> AbstractContextManager[None]:
    """Sign-in keeps working while Redis is down, unthrottled, and the log says so."""
    return limits.redis_down_tolerated(what, limiter="login throttle")


class ThrottledModelBackend(ModelBackend):
    """Django's username/password check, refused outright while the throttle holds."""

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> Any:
        if is_throttled(request, username or kwargs.get("username") or ""):
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


@receiver(user_login_failed)
def _count_failure(sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **_: Any) -> None:
    record_failure(request, str(credentials.get("username", "")))


@receiver(user_logged_in)
def _reset_on_success(sender: Any, request: HttpRequest | None, user: Any, **_: Any) -> None:
    record_success(request, user.get_username())
