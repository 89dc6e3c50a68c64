"""The widget's public endpoints: the loader, the frame page and its embedding policy, the config
the loader reads cross-origin, and the session endpoint that hands out customer tokens."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from conversations.models import Customer, WidgetSite
from conversations.widget import services

from .conftest import OURS, SHOP, start_session

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clean_redis")]


def frame_ancestors(response: Any) -> list[str]:
    policy = dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";"))
    return policy["frame-ancestors"].split()


def test_it_serves_the_loader_as_a_script() -> None:
    response = Client().get("/widget.js")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/javascript; charset=utf-8"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cache-Control"] == "public, max-age=300"
    assert b"attachShadow" in response.content


def test_the_frame_may_be_embedded_by_the_sites_origins_only(site: WidgetSite, settings: Any) -> None:
    settings.WIDGET_ALLOWED_ORIGINS = ["https://docs.example.com", "not an origin"]
    response = Client().get(f"/widget/{site.key}/frame")
    assert response.status_code == 200
    assert "X-Frame-Options" not in response
    assert frame_ancestors(response) == ["'self'", SHOP, "https://docs.example.com"]
    assert response["Content-Security-Policy"].count("script-src 'self'") == 1  # the rest stays strict


def test_a_site_without_origins_is_framed_only_by_our_own_pages(db: Any) -> None:
    site = WidgetSite.objects.create(name="Bare")
    assert frame_ancestors(Client().get(f"/widget/{site.key}/frame")) == ["'self'"]


def test_the_frame_renders_the_sites_chat_config(site: WidgetSite) -> None:
    response = Client().get(f"/widget/{site.key}/frame")
    assert response.context["widget"] is True
    config = response.context["chat_config"]
    assert (config["title"], config["brand_colour"], config["widget"]) == ("Help", "#112233", True)


@pytest.mark.parametrize("path", ["/", "/accounts/login/", "/healthz"])
def test_every_other_page_still_refuses_to_be_framed(path: str) -> None:
    response = Client().get(path)
    assert response["X-Frame-Options"] == "DENY"
    assert frame_ancestors(response) == ["'none'"]


@pytest.mark.parametrize("what", ["frame", "config"])
def test_an_unknown_site_is_not_found(what: str) -> None:
    assert Client().get(f"/widget/nosuchsite/{what}").status_code == 404


def test_an_unknown_sites_session_is_not_found() -> None:
    response = Client().post("/widget/nosuchsite/session", "{}", content_type="application/json", HTTP_ORIGIN=OURS)
    assert response.status_code == 404


def test_the_config_answers_an_allowed_origin_with_cors(site: WidgetSite) -> None:
    response = Client().get(f"/widget/{site.key}/config", HTTP_ORIGIN=SHOP)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == SHOP
    assert response["Vary"] == "Origin"
    assert response.json() == {"title": "Help", "brand_colour": "#112233", "position": "right", "origins": [SHOP, OURS]}


def test_the_config_refuses_another_origin(site: WidgetSite) -> None:
    response = Client().get(f"/widget/{site.key}/config", HTTP_ORIGIN="https://evil.example")
    assert response.status_code == 403
    assert response.json() == {
        "error": "origin_not_allowed",
        "detail": "https://evil.example may not embed this chat (/agent/widget/).",
    }  # the refusal alone: the loader may read it (CORS) to say why


def test_the_session_endpoint_gives_a_new_customer_a_token(site: WidgetSite) -> None:
    response = start_session(site)
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    customer = services.customer_of_token(response.json()["token"])
    assert customer is not None and customer.site == site and customer.external_id == ""
    assert "sessionid" not in response.cookies  # no cookie: the frame has none to keep


@pytest.mark.parametrize("origin", [None, SHOP, "https://evil.example", "null"])
def test_the_session_endpoint_answers_only_our_own_frame(site: WidgetSite, origin: str | None) -> None:
    response = start_session(site, origin=origin)
    assert response.status_code == 403
    assert response.json()["error"] == "origin_refused"
    assert not Customer.objects.exists()


def test_the_session_endpoint_is_rate_limited_per_address(site: WidgetSite, settings: Any) -> None:
    settings.CHAT_ADDRESS_CUSTOMERS = 2
    assert [start_session(site).status_code for _ in range(2)] == [200, 200]
    refused = start_session(site)
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited" and "Too many new chats" in refused.json()["detail"]
    assert Customer.objects.count() == 2


def identity(site: WidgetSite, user_id: str = "user-42", **extra: str) -> dict[str, str]:
    signature = services.identity_hash(secret=site.identity_secret, user_id=user_id)
    return {"user_id": user_id, "user_hash": signature, **extra}


def test_a_verified_user_gets_the_same_customer_on_every_device(site: WidgetSite) -> None:
    first = start_session(site, identity(site, name="Ann", email="ann@example.com"))
    second = start_session(site, identity(site))
    one = services.customer_of_token(first.json()["token"])
    two = services.customer_of_token(second.json()["token"])
    assert one is not None and two is not None and one.id == two.id
    assert (two.external_id, two.display_name, two.email) == ("user-42", "Ann", "ann@example.com")
    assert Customer.objects.count() == 1


def test_the_same_user_id_on_another_site_is_another_customer(site: WidgetSite) -> None:
    other = WidgetSite.objects.create(name="Other", allowed_origins=[SHOP])
    start_session(site, identity(site))
    start_session(other, identity(other))
    assert Customer.objects.filter(external_id="user-42").count() == 2


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "user-42", "user_hash": "0" * 64},
        {"user_id": "user-42", "user_hash": ""},
        {"user_id": "user-42"},
        {"user_hash": "abc"},
        {"user_id": 42, "user_hash": "abc"},
    ],
)
def test_a_wrong_identity_hash_is_refused_and_creates_nothing(site: WidgetSite, body: dict[str, Any]) -> None:
    response = start_session(site, body)
    assert response.status_code == 403
    assert response.json()["error"] == "identity_invalid"
    assert not Customer.objects.exists()


def test_a_hash_made_with_the_old_secret_fails_after_a_regeneration(site: WidgetSite) -> None:
    old = identity(site)
    services.site_secret_regenerate(site=site)
    assert start_session(site, old).status_code == 403
    assert start_session(site, identity(site)).status_code == 200


def test_a_bad_email_from_the_host_is_dropped_not_fatal(site: WidgetSite) -> None:
    response = start_session(site, identity(site, name="Ann", email="not-an-email"))
    customer = services.customer_of_token(response.json()["token"])
    assert customer is not None and (customer.display_name, customer.email) == ("Ann", "")


def test_a_body_that_is_not_json_is_refused(site: WidgetSite) -> None:
    response = Client().post(f"/widget/{site.key}/session", "{", content_type="application/json", HTTP_ORIGIN=OURS)
    assert response.status_code == 400


DOCS = Path(__file__).resolve().parents[2] / "docs" / "widget.md"


def docs_example(language: str) -> str:
    return re.search(rf"```{language}\n(.*?)```", DOCS.read_text(), re.S).group(1)  # type: ignore[union-attr]


def test_the_documented_python_signature_is_accepted(site: WidgetSite) -> None:
    scope: dict[str, Any] = {}
    exec(docs_example("python"), scope)
    body = {"user_id": "user-7", "user_hash": scope["widget_user_hash"](site.identity_secret, "user-7")}
    assert start_session(site, body).status_code == 200


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_documented_node_signature_is_accepted(site: WidgetSite) -> None:
    program = docs_example("js") + f"\nprocess.stdout.write(widgetUserHash({site.identity_secret!r}, 'user-7'));"
    signature = subprocess.run(["node", "-e", program], capture_output=True, text=True, check=True).stdout
    assert start_session(site, {"user_id": "user-7", "user_hash": signature}).status_code == 200
