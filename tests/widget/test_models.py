"""Sites and their origins: what an admin may type, and how it is stored."""

from __future__ import annotations

from typing import Any

import pytest

from conversations.models import WidgetSite
from conversations.widget.forms import WidgetSiteForm
from conversations.widget.origins import InvalidOrigin, origin_normalise, origins_parse

FORM = {"name": "Shop", "title": "Help", "greeting": "", "brand_colour": "#112233", "position": "right"}


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("https://Shop.Example.com", "https://shop.example.com"),
        ("https://shop.example.com/", "https://shop.example.com"),
        ("https://shop.example.com:443", "https://shop.example.com"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("http://[::1]:3000", "http://[::1]:3000"),
        ("  http://127.0.0.1  ", "http://127.0.0.1"),
    ],
)
def test_it_normalises_an_origin_as_browsers_send_it(typed: str, stored: str) -> None:
    assert origin_normalise(typed) == stored


@pytest.mark.parametrize(
    "typed",
    [
        "shop.example.com",
        "ftp://shop.example.com",
        "https://shop.example.com/page",
        "https://shop.example.com?x=1",
        "https://*.example.com",
        "https://user:pw@shop.example.com",
        "https://shop.example.com:99999",
        "javascript:alert(1)",
    ],
)
def test_it_refuses_what_is_not_an_origin(typed: str) -> None:
    with pytest.raises(InvalidOrigin):
        origin_normalise(typed)


def test_it_parses_one_origin_a_line_without_duplicates() -> None:
    assert origins_parse("https://a.example\nhttps://A.example/\n\nhttp://b.example:81, https://c.example") == [
        "https://a.example",
        "http://b.example:81",
        "https://c.example",
    ]


@pytest.mark.django_db
def test_a_new_site_has_a_random_key_and_secret() -> None:
    one, two = WidgetSite.objects.create(name="One"), WidgetSite.objects.create(name="Two")
    assert one.key != two.key and len(one.key) == 16
    assert one.identity_secret != two.identity_secret and len(one.identity_secret) == 64
    assert (one.title, one.brand_colour, one.position, one.prechat, one.suggestions) == (
        "Support",
        "#2563eb",
        "right",
        "off",
        True,
    )


@pytest.mark.django_db
def test_the_form_stores_origins_normalised() -> None:
    form = WidgetSiteForm(
        {**FORM, "prechat": "optional", "origins": "https://Shop.example.com/\nhttp://localhost:3000"}
    )
    assert form.is_valid(), form.errors
    site = form.save()
    assert site.allowed_origins == ["https://shop.example.com", "http://localhost:3000"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("origins", "https://shop.example.com/cart", "no path"),
        ("origins", "shop.example.com", "http:// or https://"),
        ("brand_colour", "blue", "six hex digits"),
        ("brand_colour", "#12345", "six hex digits"),
        ("position", "top", "valid choice"),
        ("prechat", "always", "valid choice"),
        ("name", "", "required"),
    ],
)
def test_the_form_says_what_is_wrong(field: str, value: str, says: str) -> None:
    form = WidgetSiteForm({**FORM, "prechat": "off", "origins": "", field: value})
    assert not form.is_valid()
    assert says in " ".join(form.errors[field])


@pytest.mark.django_db
def test_an_edit_shows_the_stored_origins(site: Any) -> None:
    assert WidgetSiteForm(instance=site)["origins"].value() == "https://shop.example.com"
