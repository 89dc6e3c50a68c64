from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from . import dispatch, services


@ensure_csrf_cookie
def chat_page(request: HttpRequest) -> HttpResponse:
    """The customer's chat. The visit itself gives the browser a customer identity in its session."""
    services.customer_from_session(request.session)
    return render(request, "chat.html", {"max_chars": settings.CHAT_MAX_MESSAGE_CHARS})


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"web": "ok", "worker_online": dispatch.worker_online()})
