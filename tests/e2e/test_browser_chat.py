"""The chat page in real headless Chromium against the live system and the real model."""

from __future__ import annotations

import time
from typing import Any

import pytest

from conversations.models import Message

pytestmark = [pytest.mark.browser, pytest.mark.model, pytest.mark.django_db(transaction=True)]


def bot_bubbles(page: Any) -> Any:
    return page.locator("li.msg.bot")


def watch_streaming(page: Any, timeout_s: float = 120) -> list[str]:
    """The last bot bubble's text, sampled until its reply is finished."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    last = bot_bubbles(page).last
    while time.monotonic() < deadline:
        # The text and the class in one read: apart, the reply's "done" could land between them,
        # and the final text would be missed though the class says finished.
        text, classes = last.evaluate("(li) => [li.querySelector('.body').textContent, li.className]")
        if not seen or seen[-1] != text:
            seen.append(text)
        if any(status in classes for status in ("complete", "cancelled", "failed")):
            return seen
        time.sleep(0.03)
    raise AssertionError(f"the reply never finished; saw {seen[-1:]}")


def test_a_customer_chats_reloads_and_stops_a_reply(live_system: Any, browser: Any) -> None:
    page = browser.new_context().new_page()
    page.goto(live_system.url + "/")
    page.wait_for_selector("#connection.online")

    page.fill("#input", "Hi! What can you do for me?")
    page.keyboard.press("Enter")
    page.wait_for_selector("li.msg.bot")
    seen = watch_streaming(page)
    assert "complete" in (bot_bubbles(page).last.get_attribute("class") or "")
    growing = [text for text in seen if text]
    assert len(growing) >= 2, f"the reply did not stream in: {seen}"
    final = growing[-1]

    page.reload()
    page.wait_for_selector("#connection.online")
    page.wait_for_selector("li.msg.bot.complete")
    assert page.locator("li.msg.customer .body").first.text_content() == "Hi! What can you do for me?"
    assert bot_bubbles(page).last.locator(".body").text_content() == final

    page.fill("#input", "Please write a very long story about a dragon who runs a bakery.")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => { const b = [...document.querySelectorAll('li.msg.bot')].pop();"
        " return b && b.classList.contains('streaming') && b.querySelector('.body').textContent.length > 0; }",
        timeout=120_000,
    )
    page.click("#stop")
    page.wait_for_selector("li.msg.bot.cancelled", timeout=30_000)
    stopped = bot_bubbles(page).last
    partial = stopped.locator(".body").text_content() or ""
    assert partial and (stopped.locator(".meta").text_content() or "").startswith("Stopped.")
    assert page.locator("#send").is_visible()
    reply = Message.objects.filter(role="bot").order_by("-id").first()
    assert reply is not None and reply.status == "cancelled" and reply.text.startswith(partial[:20])


def test_markup_typed_by_a_customer_is_shown_as_text(live_system: Any, browser: Any) -> None:
    page = browser.new_context().new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(live_system.url + "/")
    page.wait_for_selector("#connection.online")
    payload = '<img src=x onerror="alert(1)"><script>alert(2)</script><b>bold</b>'
    page.fill("#input", payload)
    page.keyboard.press("Enter")
    page.wait_for_selector("li.msg.customer.complete")
    bubble = page.locator("li.msg.customer").last
    assert bubble.locator(".body").text_content() == payload
    assert bubble.locator("img, script, b").count() == 0
    assert dialogs == []
