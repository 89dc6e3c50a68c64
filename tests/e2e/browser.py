"""Real headless Chromium (Debian's), driven by Playwright. Never `playwright install`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def launch() -> Iterator[Any]:
    """Chromium for as long as the caller iterates: the ``browser`` fixture (tests/conftest.py)."""
    if not CHROMIUM.exists():
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls in these tests are
    # plain synchronous ones all the same.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def signed_in_context(browser: Any, system: Any, user: Any, **options: Any) -> Any:
    """A browser context carrying ``user``'s session cookie for the live system; ``options`` are
    Playwright's context options (a phone's viewport, say)."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    context = browser.new_context(**options)
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": system.url}])
    return context


def customer_page(browser: Any, system: Any, *, timeout_ms: int) -> Any:
    """A new customer on the chat page at /, once its socket is live."""
    from playwright.sync_api import expect

    page = browser.new_context().new_page()
    page.set_default_timeout(timeout_ms)
    page.goto(system.url + "/")
    expect(page.locator("#connection")).to_have_class("badge online")
    return page


def agent_page(context: Any, system: Any, path: str, *, timeout_ms: int) -> Any:
    """A workspace page in ``context`` (``signed_in_context``), once the agents' socket is live."""
    from playwright.sync_api import expect

    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    page.goto(system.url + path)
    expect(page.locator("#agent-connection")).to_have_class("badge online")
    return page
