"""The real model's reply, streamed into the chat page through the markdown path: what the bubble
shows at the end is the stored reply rendered by the same parser, with only allowed elements."""

from __future__ import annotations

from typing import Any

import pytest

from conversations.models import Message
from tests.e2e.test_browser_chat_ux import ALLOWED

pytestmark = [pytest.mark.browser, pytest.mark.model, pytest.mark.django_db(transaction=True)]

# The page's own parser, configured as chat.js configures it, on the stored text.
RENDER = """(text) => {
  const md = window.markdownit({ html: false, linkify: true, breaks: true });
  const t = document.createElement("template");
  t.innerHTML = md.render(text).trim();
  return t.content.textContent;
}"""


def test_a_real_reply_streams_in_as_markdown(live_system: Any, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(180_000)
    page.goto(live_system.url + "/")
    page.wait_for_selector("#connection.online")
    page.fill("#input", "Please list three fruits as a bulleted list, with the first one in bold.")
    page.keyboard.press("Enter")
    page.wait_for_selector("li.msg.bot.streaming")
    bubble = page.locator("li.msg.bot").last
    seen = set()
    while "streaming" in (bubble.get_attribute("class") or "") or "pending" in (bubble.get_attribute("class") or ""):
        seen.add(bubble.locator(".body").inner_html())
        page.wait_for_timeout(50)
    assert "complete" in (bubble.get_attribute("class") or "")
    assert len(seen) >= 2, "the reply did not stream in"
    reply = Message.objects.filter(role="bot").latest("id")
    assert reply.text.strip()
    tags = set(bubble.locator(".body").evaluate("(el) => [...el.querySelectorAll('*')].map((e) => e.tagName)"))
    assert tags <= ALLOWED
    assert bubble.locator(".body").text_content() == page.evaluate(RENDER, reply.text)
    context.close()
