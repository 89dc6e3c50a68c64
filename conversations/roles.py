"""Who may do what: agents are users in the ``agents`` group; staff users can do all an agent can."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden

AGENT_GROUP = "agents"  # created by migration conversations 0002


def is_agent(user: Any) -> bool:
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if user.is_staff or user.is_superuser:
        return True
    return user.groups.filter(name=AGENT_GROUP).exists()


def active_user(user_id: Any) -> Any:
    """The user fresh from the database; None once deleted or deactivated. Long-lived sockets ask
    again with this, so a demotion or deactivation takes effect without the user signing out."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.filter(pk=user_id, is_active=True).first()


def display_name(user: Any) -> str:
    """How an agent is named to customers: the first name when set, else the username."""
    if user is None:
        return ""
    return user.first_name or user.get_username()


def agent_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Anonymous visitors go to the login page; signed-in users who are not agents get 403."""

    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not is_agent(request.user):
            return HttpResponseForbidden("Agents only.")
        return view(request, *args, **kwargs)

    return guarded
