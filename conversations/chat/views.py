"""The customer's chat page."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from .. import limits
from ..models import Feedback
from ..widget.selectors import chat_config
from . import services


@ensure_csrf_cookie
def chat_page(request: HttpRequest) -> HttpResponse:
    """The customer's chat. The visit itself gives the browser a customer identity in its session;
    past ``CHAT_ADDRESS_CUSTOMERS`` new identities from one address a window, a page saying so
    (429), and no row: a flood of cookie-less visits creates nothing."""
    if services.customer_of_session(request.session) is None:
        ip, address = limits.request_ip(request)
        if not limits.customer_create_allowed(address=address):
            return render(
                request,
                "chat_limited.html",
                {"window_min": max(1, settings.CHAT_ADDRESS_CUSTOMERS_WINDOW_S // 60)},
                status=429,
            )
        services.customer_create(session=request.session, address=str(ip) if ip else None)
    return render(
        request,
        "chat.html",
        {
            "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
            "reasons": Feedback.Reason.values,
            "chat_config": chat_config(None),
            "widget": False,
        },
    )
