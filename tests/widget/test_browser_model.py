"""The widget with the real model: a shop's page on another origin embeds it, and the reply streams
into the iframe and is stored for the customer the widget's token names."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from conversations.models import Conversation, Customer, Message, WidgetSite
from tests.widget.test_browser import LAUNCHER, HostPage, frame_of, host_html, open_host

pytestmark = [pytest.mark.browser, pytest.mark.model, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def shop() -> Iterator[HostPage]:
    page = HostPage("127.0.0.1")  # http://localhost:PORT: another origin than the chat's 127.0.0.1
    yield page
    page.stop()


def test_a_real_reply_streams_into_the_widget_on_another_origin(live_system: Any, browser: Any, shop: HostPage) -> None:
    site = WidgetSite.objects.create(name="Shop", allowed_origins=[f"http://localhost:{shop.port}"])
    shop.html = host_html(live_system, site)
    ctx, page, _ = open_host(browser, f"http://localhost:{shop.port}/help")
    page.locator(LAUNCHER).click()
    frame = frame_of(page, site)
    frame.wait_for_selector("#connection.online", timeout=60_000)
    frame.fill("#input", "Hello! How do I reset my password?")
    frame.press("#input", "Enter")

    seen: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        last = frame.locator("li.msg.bot").last
        if last.count():
            text = last.locator(".body").text_content() or ""
            if text and (not seen or seen[-1] != text):
                seen.append(text)
            if "complete" in (last.get_attribute("class") or ""):
                break
        time.sleep(0.03)
    else:
        raise AssertionError(f"the reply never finished in the widget; saw {seen[-1:]}")
    assert len(seen) >= 2, f"the reply did not stream in: {seen}"

    customer = Customer.objects.get(site=site)
    conversation = Conversation.objects.get(customer=customer)
    reply = conversation.messages.get(role=Message.Role.BOT)
    assert reply.status == Message.Status.COMPLETE and reply.text.strip()
    assert conversation.page_url == f"http://localhost:{shop.port}/help"
    ctx.close()
