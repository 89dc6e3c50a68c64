"""/agent/widget/: staff list, create, edit, regenerate and delete sites, and read each one's snippet."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from conversations.models import Conversation, Customer, WidgetSite
from tests.agent.conftest import customer_client, user_client

from .conftest import SHOP

pytestmark = pytest.mark.django_db

FORM = {
    "name": "Shop",
    "title": "Help",
    "greeting": "Hi!",
    "brand_colour": "#112233",
    "position": "left",
    "prechat": "optional",
    "suggestions": "on",
    "origins": "https://Shop.example.com/",
}


@pytest.fixture
def admin(admin_user: Any) -> Client:
    return user_client(admin_user)


def test_the_snippet_names_this_deployment_and_the_site(admin: Client, site: WidgetSite, settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["support.example.com"]
    response = admin.get(f"/agent/widget/{site.id}/", HTTP_HOST="support.example.com", secure=True)
    assert response.status_code == 200
    snippet = f'<script src="https://support.example.com/widget.js" data-site="{site.key}" async></script>'
    assert response.context["snippet"] == snippet
    assert snippet.replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;") in response.content.decode()
    assert f'href="/agent/widget/{site.id}/preview"' in response.content.decode()


def test_the_list_names_each_site_and_the_nav_links_it(admin: Client, site: WidgetSite) -> None:
    page = admin.get("/agent/widget/").content.decode()
    assert f'href="/agent/widget/{site.id}/"' in page and SHOP in page
    assert 'id="nav-widget"' in page


def test_the_nav_shows_no_widget_link_to_an_agent(agent_user: Any) -> None:
    assert 'id="nav-widget"' not in user_client(agent_user).get("/agent/").content.decode()


def test_staff_create_a_site(admin: Client) -> None:
    response = admin.post("/agent/widget/new", FORM)
    site = WidgetSite.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/agent/widget/{site.id}/"
    assert (site.allowed_origins, site.position, site.prechat, site.greeting) == ([SHOP], "left", "optional", "Hi!")


def test_a_bad_form_saves_nothing_and_says_why(admin: Client) -> None:
    bad = {**FORM, "origins": "https://shop.example.com/cart", "brand_colour": "x"}
    response = admin.post("/agent/widget/new", bad)
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="form-errors"' in page and "no path" in page and "six hex digits" in page
    assert not WidgetSite.objects.exists()


def test_staff_edit_a_site(admin: Client, site: WidgetSite) -> None:
    response = admin.post(f"/agent/widget/{site.id}/", {**FORM, "title": "Ask us", "origins": "http://localhost:3000"})
    assert response.status_code == 302
    site.refresh_from_db()
    assert (site.title, site.allowed_origins) == ("Ask us", ["http://localhost:3000"])
    assert 'id="site-saved"' in admin.get(response["Location"]).content.decode()


def test_the_secret_is_regenerated_only_once_confirmed(admin: Client, site: WidgetSite) -> None:
    old = site.identity_secret
    assert admin.get(f"/agent/widget/{site.id}/secret").status_code == 200
    assert admin.post(f"/agent/widget/{site.id}/secret").status_code == 400
    site.refresh_from_db()
    assert site.identity_secret == old
    assert admin.post(f"/agent/widget/{site.id}/secret", {"confirm": site.key}).status_code == 302
    site.refresh_from_db()
    assert site.identity_secret != old and len(site.identity_secret) == 64


def test_a_site_is_deleted_only_once_confirmed(admin: Client, site: WidgetSite) -> None:
    assert "Delete the site" in admin.get(f"/agent/widget/{site.id}/delete").content.decode()
    assert admin.post(f"/agent/widget/{site.id}/delete").status_code == 400
    assert WidgetSite.objects.exists()
    response = admin.post(f"/agent/widget/{site.id}/delete", {"confirm": site.key})
    assert response.status_code == 302 and response["Location"] == "/agent/widget/"
    assert not WidgetSite.objects.exists()


def test_the_preview_embeds_the_widget_like_a_host_page(admin: Client, site: WidgetSite) -> None:
    page = admin.get(f"/agent/widget/{site.id}/preview").content.decode()
    assert f'<script src="/widget.js" data-site="{site.key}" async></script>' in page


STAFF_PAGES = ["/agent/widget/", "/agent/widget/new", "/agent/widget/{id}/", "/agent/widget/{id}/preview"]


@pytest.mark.parametrize("path", STAFF_PAGES)
def test_agents_customers_and_visitors_are_refused(
    path: str, site: WidgetSite, agent_user: Any, plain_user: Any, customer: Any
) -> None:
    url = path.format(id=site.id)
    assert user_client(agent_user).get(url).status_code == 403
    assert user_client(plain_user).get(url).status_code == 403
    assert customer_client(customer).get(url)["Location"].startswith("/accounts/login/")
    assert Client().get(url)["Location"].startswith("/accounts/login/")


def test_an_agent_cannot_change_a_site(site: WidgetSite, agent_user: Any) -> None:
    agent = user_client(agent_user)
    assert agent.post(f"/agent/widget/{site.id}/delete", {"confirm": site.key}).status_code == 403
    assert agent.post(f"/agent/widget/{site.id}/secret", {"confirm": site.key}).status_code == 403
    assert agent.post(f"/agent/widget/{site.id}/", {**FORM, "title": "Hacked"}).status_code == 403
    site.refresh_from_db()
    assert site.title == "Help"


def test_an_agent_signs_a_widget_customer_out_after_confirming(client: Any, agent_user: Any) -> None:
    site = WidgetSite.objects.create(name="Shop", allowed_origins=["https://shop.example.com"])
    customer = Customer.objects.create(site=site)
    conversation = Conversation.objects.create(customer=customer)
    nonce = customer.token_nonce
    client.force_login(agent_user)

    transcript = client.get(f"/agent/conversations/{conversation.id}/")
    assert f"/agent/customers/{customer.id}/sign-out?conversation={conversation.id}" in transcript.content.decode()
    asked = client.get(f"/agent/customers/{customer.id}/sign-out?conversation={conversation.id}")
    assert asked.status_code == 200 and "next visit starts a new, empty chat" in asked.content.decode()
    unconfirmed = client.post(f"/agent/customers/{customer.id}/sign-out", {})
    assert unconfirmed.status_code == 400
    customer.refresh_from_db()
    assert customer.token_nonce == nonce  # nothing changed without the confirmation

    done = client.post(f"/agent/customers/{customer.id}/sign-out", {"confirm": str(customer.id)})
    assert done.status_code == 200 and "is signed out of the widget" in done.content.decode()
    customer.refresh_from_db()
    assert customer.token_nonce != nonce


def test_the_transcript_of_a_page_customer_offers_no_widget_sign_out(client: Any, agent_user: Any) -> None:
    conversation = Conversation.objects.create(customer=Customer.objects.create())
    client.force_login(agent_user)
    assert "sign-out" not in client.get(f"/agent/conversations/{conversation.id}/").content.decode()
