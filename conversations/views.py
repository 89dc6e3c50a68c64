"""The pages that are neither the chat's nor the workspace's: health, and signing in."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse, JsonResponse

from . import health, login_throttle


def healthz(request: HttpRequest) -> JsonResponse:
    """Each part's state (conversations/health.py); 503 when the web cannot serve the chat."""
    report = health.health_report()
    return JsonResponse(report, status=503 if report["status"] == "down" else 200)


class ThrottledLoginView(LoginView):
    """Django's login; while the throttle holds (login_throttle) it answers 429 and says why."""

    template_name = "registration/login.html"

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if login_throttle.is_throttled(request, request.POST.get("username", "")):
            login_throttle.record_failure(request, request.POST.get("username", ""))
            context = self.get_context_data(form=self.get_form_class()(request), throttled=True)
            return self.render_to_response(context, status=429)
        return super().post(request, *args, **kwargs)
