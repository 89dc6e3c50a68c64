"""Failed-login throttling: after LOGIN_THROTTLE_FAILURES failures within LOGIN_THROTTLE_WINDOW_S,
by username or by client address, every attempt is refused until the window has passed.

It sits in the authentication backend, so every login form (ours and the Django admin's) is
throttled alike. Counts live in Django's cache; with the default per-process cache each web
process counts on its own: point CACHES at Redis to share them (docs/settings.md).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.dispatch import receiver
from django.http import HttpRequest


def _keys(request: HttpRequest | None, username: str) -> list[str]:
    address = (request.META.get("REMOTE_ADDR", "") if request is not None else "") or "unknown"
    return [f"login-failures:addr:{address}", f"login-failures:user:{username.strip().lower()[:150]}"]


def is_throttled(request: HttpRequest | None, username: str) -> bool:
    return any((cache.get(k) or 0) >= settings.LOGIN_THROTTLE_FAILURES for k in _keys(request, username))


def record_failure(request: HttpRequest | None, username: str) -> None:
    for key in _keys(request, username):
        # add() starts the window at the first failure; incr() keeps its expiry.
        if not cache.add(key, 1, timeout=settings.LOGIN_THROTTLE_WINDOW_S):
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.add(key, 1, timeout=settings.LOGIN_THROTTLE_WINDOW_S)


def record_success(request: HttpRequest | None, username: str) -> None:
    cache.delete(_keys(request, username)[1])


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
