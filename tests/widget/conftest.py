"""The widget's personas: a site that allows the shop's origin, and a Django client speaking
from our own origin (the frame) or from elsewhere."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from conversations.models import WidgetSite

SHOP = "https://shop.example.com"
OURS = "http://testserver"  # Django's test client's host


@pytest.fixture
def site(db: Any) -> WidgetSite:
    return WidgetSite.objects.create(name="Shop", allowed_origins=[SHOP], brand_colour="#112233", title="Help")


def start_session(site: WidgetSite, body: dict[str, Any] | None = None, *, origin: str | None = OURS) -> Any:
    """POST /widget/<key>/session as the frame does (no cookies), with ``origin`` as its Origin."""
    headers = {"HTTP_ORIGIN": origin} if origin is not None else {}
    return Client().post(
        f"/widget/{site.key}/session", json.dumps(body or {}), content_type="application/json", **headers
    )
