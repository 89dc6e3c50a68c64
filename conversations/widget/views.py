"""The widget's pages: the loader script, the frame page a host embeds, its config and session
endpoints (no cookies: the frame is third-party on the host page), and the staff pages that
manage sites and show each one's snippet. docs/widget.md says why each check is there."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

from csp.constants import SELF
from django.conf import settings
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseForbidden,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .. import limits
from ..models import Customer, Feedback, WidgetSite
from ..roles import agent_required
from . import selectors, services
from .forms import WidgetSiteForm
from .origins import origin_or_none

LOADER = Path(settings.BASE_DIR) / "static" / "widget.js"
LOADER_MAX_AGE_S = 300  # a changed loader reaches every host page within five minutes


def own_origin(request: HttpRequest) -> str:
    return origin_or_none(f"{request.scheme}://{request.get_host()}") or ""


def _site(key: str) -> WidgetSite:
    site = selectors.site_by_key(key)
    if site is None:
        raise Http404("No such widget site.")
    return site


@require_GET
def loader(request: HttpRequest) -> HttpResponse:
    """/widget.js, for a plain <script> tag on any page (no CORS needed for that)."""
    response = HttpResponse(LOADER.read_bytes(), content_type="text/javascript; charset=utf-8")
    response["Cache-Control"] = f"public, max-age={LOADER_MAX_AGE_S}"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@xframe_options_exempt
@require_GET
def frame(request: HttpRequest, key: str) -> HttpResponse:
    """The chat inside the widget's iframe: framable only by the site's allowed origins (and our
    own pages, for the preview), which CSP frame-ancestors tells the browser."""
    site = _site(key)
    response = render(
        request,
        "chat.html",
        {
            "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
            "reasons": Feedback.Reason.values,
            "chat_config": selectors.chat_config(site),
            "widget": True,
        },
    )
    response._csp_replace = {"frame-ancestors": [SELF, *selectors.site_origins(site)]}  # type: ignore[attr-defined]
    return response


@require_GET
def config(request: HttpRequest, key: str) -> HttpResponse:
    """The launcher's look and the frame's trusted origins. Read cross-origin by the loader, so
    CORS: an allowed Origin gets itself back; any other Origin is refused."""
    site = _site(key)
    body = selectors.loader_config(site, own_origin=own_origin(request))
    origin = request.headers.get("Origin")
    if origin is not None and origin_or_none(origin) not in body["origins"]:
        # Readable by the refused page (it holds nothing but the refusal), so the loader can say why.
        response = JsonResponse(
            {"error": "origin_not_allowed", "detail": f"{origin} may not embed this chat (/agent/widget/)."},
            status=403,
        )
    else:
        response = JsonResponse(body)
    response["Vary"] = "Origin"
    response["Cache-Control"] = "no-cache"
    if origin is not None:
        response["Access-Control-Allow-Origin"] = origin
    return response


def _refusal(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail}, status=status)


@csrf_exempt  # no cookie is read or set: the Origin check below is what stops other sites
@require_POST
def session(request: HttpRequest, key: str) -> HttpResponse:
    """A token for the widget's customer: the one the host page vouches for (data-user-id and its
    HMAC), else a new anonymous customer. Only the frame (our own origin) may ask."""
    if origin_or_none(request.headers.get("Origin", "")) != own_origin(request):
        return _refusal(403, "origin_refused", "Only the chat's own frame may start a widget session.")
    site = _site(key)
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return _refusal(400, "invalid_json", "The body must be a JSON object.")
    if not isinstance(body, dict):
        return _refusal(400, "invalid_json", "The body must be a JSON object.")
    ip, address = limits.request_ip(request)
    user_id, user_hash = body.get("user_id"), body.get("user_hash")
    if user_id or user_hash:
        if not isinstance(user_id, str) or not isinstance(user_hash, str):
            return _refusal(403, "identity_invalid", "data-user-id and data-user-hash go together, as strings.")
        try:
            services.identity_check(site=site, user_id=user_id, user_hash=user_hash)
        except services.IdentityRefused as refused:
            return _refusal(403, "identity_invalid", str(refused))
        if not services.verified_customer_exists(site=site, user_id=user_id) and not _may_create(address):
            return _too_many()
        customer, _ = services.verified_customer_get_or_create(
            site=site,
            user_id=user_id,
            user_hash=user_hash,
            name=body.get("name") or "",
            email=body.get("email") or "",
            address=str(ip) if ip else None,
        )
    else:
        if not _may_create(address):
            return _too_many()
        customer = services.widget_customer_create(site=site, address=str(ip) if ip else None)
    response = JsonResponse({"token": services.customer_token(customer=customer)})
    response["Cache-Control"] = "no-store"
    return response


def _may_create(address: str) -> bool:
    return limits.customer_create_allowed(address=address)


def _too_many() -> JsonResponse:
    window_min = max(1, settings.CHAT_ADDRESS_CUSTOMERS_WINDOW_S // 60)
    return _refusal(
        429,
        "rate_limited",
        f"Too many new chats from your network: at most {settings.CHAT_ADDRESS_CUSTOMERS} every "
        f"{window_min} minutes. Please wait a few minutes, then reload the page.",
    )


def staff_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """In the agent workspace, for staff alone (as erasure): agents get 403, others the login page."""

    @agent_required
    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not (request.user.is_staff or request.user.is_superuser):
            return HttpResponseForbidden("Only staff can manage the widget's sites.")
        return view(request, *args, **kwargs)

    return guarded


def snippet(request: HttpRequest, site: WidgetSite) -> str:
    src = request.build_absolute_uri(reverse("widget-loader"))
    return f'<script src="{src}" data-site="{site.key}" async></script>'


@staff_required
@require_GET
def site_list(request: HttpRequest) -> HttpResponse:
    return render(request, "widget/sites.html", {"sites": WidgetSite.objects.all()})


@staff_required
@require_http_methods(["GET", "POST"])
def site_create(request: HttpRequest) -> HttpResponse:
    form = WidgetSiteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        site = form.save()
        return HttpResponseRedirect(reverse("agent-widget-site", args=[site.id]))
    status = 400 if request.method == "POST" else 200
    return render(request, "widget/site_form.html", {"form": form}, status=status)


@staff_required
@require_http_methods(["GET", "POST"])
def site_detail(request: HttpRequest, site_id: int) -> HttpResponse:
    """The site's snippet and its settings form."""
    site = get_object_or_404(WidgetSite, id=site_id)
    form = WidgetSiteForm(request.POST or None, instance=site)
    saved = False
    if request.method == "POST":
        if form.is_valid():
            form.save()
            return HttpResponseRedirect(reverse("agent-widget-site", args=[site.id]) + "?saved=1")
    else:
        saved = request.GET.get("saved") == "1"
    context = {
        "site": site,
        "form": form,
        "saved": saved,
        "snippet": snippet(request, site),
        "deployment_origins": selectors.deployment_origins(),
    }
    return render(request, "widget/site_detail.html", context, status=400 if request.method == "POST" else 200)


def _confirmed_or_asked(
    request: HttpRequest, site: WidgetSite, action: str, act: Callable[[], HttpResponse]
) -> HttpResponse:
    """The POST from the confirmation page (its ``confirm`` field set to the site's key) acts;
    a GET asks; a POST without the confirmation changes nothing and asks again (400)."""
    if request.method == "POST" and request.POST.get("confirm") == site.key:
        return act()
    unconfirmed = request.method == "POST"
    return render(
        request,
        "widget/site_confirm.html",
        {"site": site, "action": action, "unconfirmed": unconfirmed},
        status=400 if unconfirmed else 200,
    )


@staff_required
@require_http_methods(["GET", "POST"])
def site_secret(request: HttpRequest, site_id: int) -> HttpResponse:
    """A new identity secret, once confirmed."""
    site = get_object_or_404(WidgetSite, id=site_id)

    def regenerate() -> HttpResponse:
        services.site_secret_regenerate(site=site)
        return HttpResponseRedirect(reverse("agent-widget-site", args=[site.id]) + "?saved=1")

    return _confirmed_or_asked(request, site, "secret", regenerate)


@staff_required
@require_http_methods(["GET", "POST"])
def site_delete(request: HttpRequest, site_id: int) -> HttpResponse:
    """The site and its snippet gone, once confirmed (its customers' conversations stay)."""
    site = get_object_or_404(WidgetSite, id=site_id)

    def delete() -> HttpResponse:
        services.site_delete(site=site)
        return HttpResponseRedirect(reverse("agent-widget"))

    return _confirmed_or_asked(request, site, "delete", delete)


@staff_required
@require_GET
def site_preview(request: HttpRequest, site_id: int) -> HttpResponse:
    """A page of ours that embeds the widget exactly as a host page would."""
    site = get_object_or_404(WidgetSite, id=site_id)
    return render(request, "widget/preview.html", {"site": site})


@agent_required
@require_http_methods(["GET", "POST"])
def customer_sign_out(request: HttpRequest, customer_id: str) -> HttpResponse:
    """Any agent: end every widget token of a customer (a customer who says someone else has their
    device, a token seen where it should not be). GET asks; the POST from that page, carrying the
    customer's id as the confirmation, revokes them and closes their open widget chats."""
    customer = get_object_or_404(Customer, id=customer_id)
    context: dict[str, Any] = {"customer": customer, "back": request.GET.get("conversation", "")}
    if request.method == "POST" and request.POST.get("confirm") == str(customer.id):
        services.customer_tokens_revoke(customer_id=customer.id)
        context["done"] = True
        return render(request, "widget/sign_out.html", context)
    context["unconfirmed"] = request.method == "POST"
    return render(request, "widget/sign_out.html", context, status=400 if context["unconfirmed"] else 200)
