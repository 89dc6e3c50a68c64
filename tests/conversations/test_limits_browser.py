"""What a customer sees of the chat's limits, in real headless Chromium against uvicorn."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from conversations.chat.consumers import SOCKETS_PER_CUSTOMER

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def limited_system(browser: Any, django_db_setup: Any, django_db_blocker: Any) -> Iterator[Any]:
    from tests.e2e.live import LiveSystem

    system = LiveSystem(fake=True, env={"CHAT_SOCKETS_PER_CUSTOMER": "1", "CHAT_ADDRESS_CUSTOMERS": "1"})
    yield system
    system.stop()


def test_it_tells_a_customer_why_a_tab_and_a_new_visit_are_refused(limited_system: Any, browser: Any) -> None:
    context = browser.new_context()
    first = context.new_page()
    first.goto(limited_system.url + "/")
    first.wait_for_selector("#connection.online")

    second = context.new_page()  # the same customer, one tab past CHAT_SOCKETS_PER_CUSTOMER
    second.goto(limited_system.url + "/")
    second.wait_for_selector("#notice:not([hidden])")
    # Worded in full, whether the server passes the close reason on (uvicorn) or drops it (daphne).
    assert (second.text_content("#notice") or "").strip() == SOCKETS_PER_CUSTOMER
    assert "online" not in (second.get_attribute("#connection", "class") or "")

    stranger = browser.new_context().new_page()  # no cookie: past CHAT_ADDRESS_CUSTOMERS from 127.0.0.1
    response = stranger.goto(limited_system.url + "/")
    assert response is not None and response.status == 429
    assert "Too many new chats" in (stranger.text_content("main") or "")
    context.close()
