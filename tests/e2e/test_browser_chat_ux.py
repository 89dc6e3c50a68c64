"""The chat for people and phones (issue 14), in real headless Chromium against uvicorn and the
scripted fake worker: phones from 320 px, 44 px targets, markdown rendered safely, retry after
Stop, the dialog before leaving a person, feedback thanks, system lines and typing both ways,
timestamps, keyboard use, contrast in light and dark, the brand colour, greeting, suggestions, the
pre-chat form and the widget's host hook. docs/chat.md describes the page."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.conf import settings

from conversations.models import Conversation, Customer, Message, WidgetSite
from conversations.widget.services import customer_token
from conversations.workspace import services as workspace_services
from tests.e2e.browser import signed_in_context
from tests.e2e.live import LiveSystem

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TIMEOUT_MS = 60_000
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
SMALL_PHONE = {"viewport": {"width": 320, "height": 640}, "is_mobile": True, "has_touch": True}

MARKDOWN_PROMPT = "Show me the markdown."
MARKDOWN_REPLY = (
    "Here is **bold** and *italic* and `code`.\n\n"
    "- first item\n- second item\n\n"
    "1. one\n2. two\n\n"
    "```\nprint('hi')\n```\n\n"
    "See [the docs](https://example.com/docs) or https://example.org/a-very-long-address-that-goes-on-and-on"
    "-and-on-without-a-single-break-anywhere-in-it and write to help@example.com."
)
XSS_PROMPT = "Show me some markup."
XSS_REPLY = (
    'Look: <img src=x onerror="window.__xss=1"> and <script>window.__xss=1</script> and '
    '[click me](javascript:window.__xss=1) and <a href="javascript:window.__xss=1">raw</a> '
    '<iframe src="javascript:window.__xss=1"></iframe> [data](data:text/html,hi) <b>bold</b> done.'
)
LONG_PROMPT = "Tell me a long story."
LONG_REPLY = " ".join(f"word{i:03d}" for i in range(400))
DEFAULT_REPLY = "Thanks for writing in: how can I help?"
SCRIPT = {MARKDOWN_PROMPT: MARKDOWN_REPLY, XSS_PROMPT: XSS_REPLY, LONG_PROMPT: LONG_REPLY}
ALLOWED = {"P", "BR", "STRONG", "EM", "CODE", "PRE", "UL", "OL", "LI", "A", "BLOCKQUOTE", "H1", "H2", "H3", "H4",
           "H5", "H6", "HR", "S", "DEL", "TABLE", "THEAD", "TBODY", "TR", "TH", "TD"}  # fmt: skip

# Before chat.js: records every frame the page sends, so a test sees the typing and profile frames.
SENT_RECORDER = """
window.__sent = [];
window.__sockets = [];
const NativeSend = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  window.__sent.push(JSON.parse(data));
  return NativeSend.call(this, data);
};
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(url, ...rest) { super(url, ...rest); window.__sockets.push(String(url)); }
};
"""

# The WCAG contrast of the page's main text and background pairs, from computed styles.
CONTRAST = """
() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).slice(0, 4).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => v / 255)
    .map((v) => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4)
    .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const c = rgb(getComputedStyle(node).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c;
    }
    return rgb(getComputedStyle(document.body).backgroundColor);
  };
  const ratio = (el) => {
    const [a, b] = [lum(rgb(getComputedStyle(el).color)), lum(background(el))].sort((x, y) => y - x);
    return (a + 0.05) / (b + 0.05);
  };
  const pick = {
    "page text": "#talk-status", "heading": "#chat-title", "bot text": "li.msg.bot .body",
    "bot name": "li.msg.bot .who", "customer text": "li.msg.customer .body", "customer name": "li.msg.customer .who",
    "link": "li.msg.bot .body a", "code": "li.msg.bot .body code", "header button": "#new-conversation",
    "send button": "#send", "input": "#input", "connection": "#connection", "rating": "li.msg.bot .rating button",
    "system line": "li.msg.system .body",
  };
  const out = {};
  for (const [name, selector] of Object.entries(pick)) {
    const el = document.querySelector(selector);
    if (el) out[name] = ratio(el);
  }
  out.__body_luminance = lum(background(document.querySelector("#messages")));
  return out;
}
"""


@pytest.fixture(scope="module")
def system(browser: Any, django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveSystem]:
    """A live system of this module's own (its own Redis prefix), the fake worker answering ``SCRIPT``."""
    system = LiveSystem(fake=True, prefix=f"{settings.REDIS_KEY_PREFIX}:chatux")
    system.stop_worker()
    system.start_scripted_worker(SCRIPT, default_reply=DEFAULT_REPLY, step_delay_s=0.02)
    system.wait_for_worker()
    yield system
    system.stop()


def expect(locator: Any) -> Any:
    from playwright.sync_api import Expect

    patient = Expect()
    patient.set_options(timeout=TIMEOUT_MS)
    return patient(locator)


# Before chat.js: merges keys into the page's chat config as the parser inserts it (as a site's
# config would), and adds HTML to the header. Not page.route: Chromium treats a fulfilled document
# as public and its Local Network Access checks then refuse the socket to 127.0.0.1.
PAGE_PATCH = """
(() => {
  const patch = %s, header = %s, bodyClass = %s;
  new MutationObserver((records, observer) => {
    const node = document.getElementById("chat-config");
    if (node && !node.dataset.patched) {
      try {
        node.textContent = JSON.stringify({ ...JSON.parse(node.textContent), ...patch });
        node.dataset.patched = "1";
      } catch { /* not all parsed yet */ }
    }
    if (bodyClass && document.body) document.body.classList.add(bodyClass);
    const actions = document.querySelector(".header-actions");
    if (header && actions && !actions.dataset.patched) {
      actions.insertAdjacentHTML("beforeend", header);
      actions.dataset.patched = "1";
    }
  }).observe(document, { childList: true, subtree: true, characterData: true });
})();
"""


@pytest.fixture
def open_chat(browser: Any, system: LiveSystem) -> Iterator[Callable[..., Any]]:
    """The chat page as a new customer; ``config`` replaces keys of the page's chat config (as the
    widget's sites will), ``header_html`` adds to the header, ``context`` sets the viewport."""
    contexts: list[Any] = []

    def open_page(
        *,
        config: dict[str, Any] | None = None,
        init: str = "",
        header_html: str = "",
        body_class: str = "",
        **context: Any,
    ) -> Any:
        ctx = browser.new_context(**context)
        contexts.append(ctx)
        patch = PAGE_PATCH % (json.dumps(config or {}), json.dumps(header_html), json.dumps(body_class))
        ctx.add_init_script(SENT_RECORDER + init + patch)
        page = ctx.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(system.url + "/")
        expect(page.locator("#connection")).to_have_class("badge online")
        expect(page.locator("#talk-status")).not_to_be_empty()
        return page

    yield open_page
    for ctx in contexts:
        ctx.close()


def send(page: Any, text: str) -> None:
    page.fill("#input", text)
    page.keyboard.press("Enter")


def last_bot(page: Any) -> Any:
    return page.locator("li.msg.bot").last


def answered(page: Any, text: str) -> Any:
    send(page, text)
    expect(last_bot(page)).to_have_class("msg bot complete")
    return last_bot(page)


def conversation_of(page: Any) -> Conversation:
    text = page.locator("li.msg.customer .body").first.text_content()
    return Message.objects.filter(role="customer", text=text).latest("id").conversation


def tags_in(locator: Any) -> set[str]:
    return set(locator.evaluate("(el) => [...el.querySelectorAll('*')].map((e) => e.tagName)"))


def assert_fits(page: Any) -> None:
    """No sideways scrolling, and every visible control inside the viewport."""
    width = page.evaluate("innerWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    outside = page.evaluate(
        """(width) => [...document.querySelectorAll('button, select, input, textarea')]
            .filter((el) => el.offsetParent !== null && !el.closest('dialog:not([open])'))
            .map((el) => [el.id || el.textContent.trim() || el.getAttribute('aria-label'), el.getBoundingClientRect()])
            .filter(([, r]) => r.left < -0.5 || r.right > width + 0.5).map(([name]) => name)""",
        width,
    )
    assert outside == [], f"cut off: {outside}"


def open_rating_row(page: Any) -> None:
    """A bot reply rated "not helpful", with its reason, comment and Send controls showing."""
    last_bot(page).locator("button[aria-label='Not helpful']").click()
    expect(last_bot(page).locator(".rating select")).to_be_visible()


@pytest.mark.parametrize("phone", [SMALL_PHONE, PHONE], ids=["320x640", "390x844"])
def test_the_chat_fits_a_phone_without_sideways_scrolling(open_chat: Any, phone: dict[str, Any]) -> None:
    page = open_chat(**phone)
    assert_fits(page)
    answered(page, MARKDOWN_PROMPT)  # a long unbroken address and a code block in it
    open_rating_row(page)
    assert_fits(page)
    expect(page.locator("#new-conversation")).to_be_in_viewport()
    expect(page.locator("#send")).to_be_in_viewport()
    page.locator("#handoff").click()
    expect(page.locator("#talk-status")).to_contain_text("asked for a person")
    assert_fits(page)


def test_every_control_is_a_44_px_target_on_a_phone(open_chat: Any) -> None:
    page = open_chat(**PHONE)
    answered(page, "Hello there")
    open_rating_row(page)
    small = page.evaluate(
        """() => [...document.querySelectorAll('button, select, input, textarea')]
            .filter((el) => el.offsetParent !== null)
            .map((el) => [el.id || el.getAttribute('aria-label') || el.textContent.trim(), el.getBoundingClientRect()])
            .filter(([, r]) => r.width < 44 || r.height < 44).map(([name, r]) => `${name} ${r.width}x${r.height}`)"""
    )
    assert small == [], f"smaller than 44x44: {small}"


def test_the_composer_stays_visible_when_the_keyboard_takes_half_the_screen(open_chat: Any) -> None:
    page = open_chat(**PHONE)
    page.locator("#input").focus()
    page.set_viewport_size({"width": 390, "height": 420})  # what resizes-content does with the keyboard open
    expect(page.locator("#input")).to_be_in_viewport()
    expect(page.locator("#send")).to_be_in_viewport()


def test_a_markdown_reply_is_rendered_with_lists_code_and_safe_links(open_chat: Any) -> None:
    page = open_chat()
    reply = answered(page, MARKDOWN_PROMPT)
    body = reply.locator(".body")
    expect(body.locator("strong")).to_have_text("bold")
    expect(body.locator("em")).to_have_text("italic")
    expect(body.locator("ul > li")).to_have_text(["first item", "second item"])
    expect(body.locator("ol > li")).to_have_text(["one", "two"])
    expect(body.locator("pre > code")).to_have_text("print('hi')\n")
    links = body.locator("a")
    assert links.evaluate_all("(all) => all.map((a) => a.href)") == [
        "https://example.com/docs",
        "https://example.org/a-very-long-address-that-goes-on-and-on-and-on-without-a-single-break-anywhere-in-it",
        "mailto:help@example.com",
    ]
    assert links.evaluate_all("(all) => all.every((a) => a.target === '_blank' && a.rel === 'noopener noreferrer')")
    assert tags_in(body) <= ALLOWED
    customer = page.locator("li.msg.customer .body").first
    assert customer.text_content() == MARKDOWN_PROMPT and tags_in(customer) == set()


def test_markup_in_a_bot_reply_runs_nothing_and_makes_no_element(open_chat: Any) -> None:
    dialogs: list[str] = []
    page = open_chat()
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    reply = answered(page, XSS_PROMPT)

    def assert_inert() -> None:
        body = last_bot(page).locator(".body")
        assert tags_in(body) <= ALLOWED
        assert page.locator("#messages img, #messages script, #messages iframe, #messages b").count() == 0
        hrefs = body.locator("a").evaluate_all("(all) => all.map((a) => a.getAttribute('href'))")
        assert all(h and h.startswith(("http:", "https:", "mailto:")) for h in hrefs), hrefs
        assert "<script>" in (body.text_content() or "")  # shown as text, as written
        for link in body.locator("a").all():
            link.click()
        assert page.evaluate("typeof window.__xss") == "undefined"

    assert_inert()
    assert reply.locator(".body a").count() == 0  # javascript: and data: links are no links
    page.reload()
    expect(last_bot(page)).to_have_class("msg bot complete")
    assert_inert()
    assert dialogs == []


def test_markup_in_an_agent_message_runs_nothing(open_chat: Any, agent_user: Any) -> None:
    page = open_chat()
    answered(page, "Hello there")
    conversation = conversation_of(page)
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    workspace_services.agent_message_send(conversation=conversation, agent=agent_user, text=XSS_REPLY + " **yes**")
    page.reload()
    agent = page.locator("li.msg.agent").last
    expect(agent.locator(".body strong")).to_have_text("yes")
    assert tags_in(agent.locator(".body")) <= ALLOWED
    assert page.locator("#messages img, #messages script, #messages iframe").count() == 0
    assert page.evaluate("typeof window.__xss") == "undefined"
    expect(page.locator("li.msg.system .body")).to_have_text(["Dana joined the conversation."])


def test_stop_then_regenerate_asks_again(open_chat: Any) -> None:
    page = open_chat()
    send(page, LONG_PROMPT)
    expect(last_bot(page)).to_have_class("msg bot streaming")
    page.locator("#stop").click()
    expect(last_bot(page)).to_have_class("msg bot cancelled")
    regenerate = last_bot(page).locator("button.retry")
    expect(regenerate).to_have_text("Regenerate")
    regenerate.click()
    expect(page.locator("li.msg.bot")).to_have_count(2)
    expect(page.locator("li.msg.bot").first.locator("button.retry")).to_have_count(0)
    expect(last_bot(page)).to_have_class(re.compile(r"msg bot (pending|streaming)"))
    page.locator("#stop").click()
    expect(last_bot(page).locator("button.retry")).to_be_visible()


def test_new_conversation_asks_first_while_waiting_for_a_person(open_chat: Any) -> None:
    page = open_chat()
    answered(page, "Hello there")
    page.locator("#handoff").click()
    expect(page.locator("#talk-status")).to_contain_text("asked for a person")
    dialog = page.locator("#confirm-new")

    page.locator("#new-conversation").click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("lose your place")
    assert page.evaluate("document.activeElement.id") == "confirm-new-cancel"
    for _ in range(5):  # focus stays in the dialog
        page.keyboard.press("Tab")
        assert page.evaluate(
            "!!document.activeElement.closest('#confirm-new') || document.activeElement === document.body"
        )
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.locator("li.msg.customer")).to_have_count(1)  # nothing happened

    page.keyboard.press("Alt+n")
    expect(dialog).to_be_visible()
    page.locator("#confirm-new-ok").click()
    expect(page.locator("li.msg")).to_have_count(0)
    expect(page.locator("#talk-status")).to_have_text("You are talking to our automated assistant.")


def test_new_conversation_with_the_bot_does_not_ask(open_chat: Any) -> None:
    page = open_chat()
    answered(page, "Hello there")
    page.locator("#new-conversation").click()
    expect(page.locator("li.msg")).to_have_count(0)
    expect(page.locator("#confirm-new")).to_be_hidden()


def test_a_rating_is_thanked_and_announced(open_chat: Any) -> None:
    page = open_chat()
    reply = answered(page, "Hello there")
    reply.locator("button[aria-label=Helpful]").click()
    expect(reply.locator(".thanks")).to_have_text("Thanks for your feedback")
    expect(page.locator("#announcer")).to_have_text("Thanks for your feedback.")
    reply.locator("button[aria-label='Not helpful']").click()
    reply.locator(".rating input").fill("Too short")
    reply.locator(".rating button:text('Send')").click()
    expect(reply.locator(".thanks")).to_be_visible()
    assert reply.locator(".rating input").input_value() == "Too short"


def test_finished_replies_are_announced_once_and_the_list_is_not_live(open_chat: Any) -> None:
    page = open_chat()
    assert page.locator("#messages").get_attribute("aria-live") is None
    answered(page, "Hello there")
    expect(page.locator("#announcer")).to_have_text(f"Assistant: {DEFAULT_REPLY}")
    assert page.locator("#announcer").get_attribute("aria-live") == "polite"


def test_every_message_has_a_time_shown_on_hover_and_always_on_touch(open_chat: Any) -> None:
    page = open_chat()
    reply = answered(page, "Hello there")
    stamp = reply.locator("time")
    assert stamp.get_attribute("datetime")
    assert re.search(r"\d", stamp.get_attribute("title") or "")
    assert re.fullmatch(r"\d{1,2}:\d{2}( ?[AP]M)?", stamp.text_content() or "")
    page.mouse.move(0, 0)
    expect(stamp).to_have_css("opacity", "0")
    reply.hover()
    expect(stamp).to_have_css("opacity", "1")
    phone = open_chat(**PHONE)
    phone_reply = answered(phone, "Hello there")
    expect(phone_reply.locator("time")).to_have_css("opacity", "1")


def test_the_keyboard_reaches_everything_in_order_and_operates_it(open_chat: Any) -> None:
    page = open_chat()
    answered(page, "Hello there")
    page.locator("body").click(position={"x": 1, "y": 1})
    page.evaluate("document.activeElement.blur()")
    order = []
    for _ in range(12):
        page.keyboard.press("Tab")
        order.append(
            page.evaluate(
                """() => { const el = document.activeElement;
                  const region = el.closest('header') ? 'header' : el.closest('#messages') ? 'messages'
                    : el.closest('#composer') ? 'composer' : 'other';
                  return [region, el.id || el.getAttribute('aria-label') || el.textContent.trim()]; }"""
            )
        )
    regions = [region for region, _ in order]
    first = {r: regions.index(r) for r in ("header", "messages", "composer")}
    assert first["header"] < first["messages"] < first["composer"], order
    assert ["messages", "Helpful"] in order and ["composer", "input"] in order, order
    page.locator("li.msg.bot button[aria-label=Helpful]").focus()
    page.keyboard.press("Enter")
    expect(page.locator("li.msg.bot button[aria-label=Helpful]")).to_have_attribute("aria-pressed", "true")
    page.locator("li.msg.bot button[aria-label=Helpful]").focus()
    page.keyboard.press(" ")  # Space takes it back
    expect(page.locator("li.msg.bot button[aria-label=Helpful]")).to_have_attribute("aria-pressed", "false")
    page.locator("#handoff").focus()
    page.keyboard.press(" ")
    expect(page.locator("#talk-status")).to_contain_text("asked for a person")
    outline = page.locator("#new-conversation")
    outline.focus()
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"


def test_no_control_is_labelled_by_an_emoji_alone(open_chat: Any) -> None:
    page = open_chat()
    answered(page, "Hello there")
    open_rating_row(page)
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('button, select, input, textarea')].filter((el) => {
            const labelled = el.labels && el.labels[0] && el.labels[0].textContent;
            const label = el.getAttribute('aria-label') || labelled || el.textContent;
            return !label.trim() || /\\p{Extended_Pictographic}/u.test(el.textContent);
        }).map((el) => el.outerHTML.slice(0, 80))"""
    )
    assert unnamed == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_main_text_meets_aa_contrast(open_chat: Any, agent_user: Any, scheme: str) -> None:
    page = open_chat(color_scheme=scheme)
    answered(page, MARKDOWN_PROMPT)
    conversation = conversation_of(page)
    workspace_services.conversation_takeover(conversation=conversation, agent=agent_user)
    page.reload()  # the takeover's frames went to this process's Redis prefix, not the live one's
    expect(page.locator("li.msg.system")).to_have_count(1)
    ratios = page.evaluate(CONTRAST)
    luminance = ratios.pop("__body_luminance")
    assert (luminance < 0.05) if scheme == "dark" else (luminance > 0.8)
    low = {name: round(r, 2) for name, r in ratios.items() if r < 4.5}
    assert len(ratios) >= 12 and low == {}, low


@pytest.mark.parametrize("brand", ["#ffd400", "#5b21b6"])
def test_the_brand_colour_is_the_accent_with_readable_text_on_it(open_chat: Any, brand: str) -> None:
    page = open_chat(config={"brand_colour": brand})
    answered(page, "Hello there")
    ratios = page.evaluate(CONTRAST)
    accent = page.evaluate("getComputedStyle(document.querySelector('#send')).backgroundColor")
    red, green, blue = (int(brand[i : i + 2], 16) for i in (1, 3, 5))
    assert accent == f"rgb({red}, {green}, {blue})"
    assert ratios["send button"] >= 4.5 and ratios["customer text"] >= 4.5


def test_the_title_greeting_and_suggestions_come_from_the_config(open_chat: Any) -> None:
    question = "Where is my order?"
    page = open_chat(
        config={"title": "Bramble & Finch", "greeting": "Hi! I am **Bramble**.", "suggestions": [question]}
    )
    expect(page.locator("#chat-title")).to_have_text("Bramble & Finch")
    assert page.title() == "Bramble & Finch"
    expect(page.locator("li.greeting .body strong")).to_have_text("Bramble")
    expect(page.locator("li.msg")).to_have_count(0)  # the greeting is no stored message
    page.locator("#suggestions button", has_text=question).click()
    expect(page.locator("li.msg.customer .body")).to_have_text([question])
    expect(page.locator("#suggestions")).to_be_hidden()
    expect(last_bot(page)).to_have_class("msg bot complete")
    expect(page.locator("#messages > li").first).to_have_class("greeting")
    assert not Message.objects.filter(text__contains="Bramble").exists()


def test_the_pre_chat_form_comes_before_the_first_message(open_chat: Any) -> None:
    page = open_chat(config={"prechat": True})
    expect(page.locator("#prechat")).to_be_visible()
    expect(page.locator("#composer")).to_be_hidden()
    page.fill("#prechat-name", "Alice")
    page.fill("#prechat-email", "not an address")
    page.locator("#prechat button[type=submit]").click()
    expect(page.locator("#prechat-error")).to_have_text("That e-mail address does not look right.")
    page.fill("#prechat-email", "alice@example.com")
    page.locator("#prechat button[type=submit]").click()
    expect(page.locator("#composer")).to_be_visible()
    assert {"type": "profile", "name": "Alice", "email": "alice@example.com"} in page.evaluate("window.__sent")
    page.reload()
    expect(page.locator("#connection")).to_have_class("badge online")
    expect(page.locator("#prechat")).to_be_hidden()

    skipped = open_chat(config={"prechat": True})
    skipped.locator("#prechat-skip").click()
    expect(skipped.locator("#composer")).to_be_visible()
    assert not any(frame["type"] == "profile" for frame in skipped.evaluate("window.__sent"))


@pytest.mark.parametrize("width", [320, 400])
def test_the_widget_layout_fills_its_frame_and_fits(open_chat: Any, width: int) -> None:
    close = '<button id="close-widget" type="button" aria-label="Close chat">x</button>'
    page = open_chat(body_class="widget", header_html=close, viewport={"width": width, "height": 560}, has_touch=True)
    box = page.locator("main.chat").bounding_box()
    assert box is not None and abs(box["height"] - 560) <= 1 and abs(box["width"] - width) <= 1
    answered(page, MARKDOWN_PROMPT)
    assert_fits(page)
    for control in ("#close-widget", "#new-conversation", "#send"):
        expect(page.locator(control)).to_be_in_viewport()


HOST = """
window.__notified = [];
window.chatHost = {
  ready: async () => ({ token: TOKEN }),
  renew: async () => {},
  notify: (event) => window.__notified.push(event),
};
"""


def test_the_host_hook_gives_the_token_and_hears_finished_messages_and_close(open_chat: Any) -> None:
    site = WidgetSite.objects.create(name="Shop", allowed_origins=["https://shop.example.com"])
    customer = Customer.objects.create(site=site)
    token = customer_token(customer=customer)
    close = '<button id="close-widget" type="button" aria-label="Close chat">x</button>'
    page = open_chat(init=HOST.replace("TOKEN", json.dumps(token)), header_html=close)
    assert parse_qs(urlsplit(page.evaluate("window.__sockets")[0]).query)["token"] == [token]
    answered(page, "Hello there")
    assert (
        Conversation.objects.get(customer=customer).messages.filter(text="Hello there").exists()
    )  # the token's customer's
    expect(page.locator("li.msg.bot.complete")).to_have_count(1)
    page.wait_for_function("window.__notified.length > 0")
    assert page.evaluate("window.__notified") == [{"type": "message", "role": "bot", "text": DEFAULT_REPLY}]
    page.locator("#close-widget").click()
    assert page.evaluate("window.__notified")[-1] == {"type": "close"}
    page.reload()  # history is not "finished live": nothing more to count
    expect(last_bot(page)).to_have_class("msg bot complete")
    assert page.evaluate("window.__notified") == []


def test_an_agent_and_the_customer_see_each_other_typing_and_the_joined_line(
    open_chat: Any, browser: Any, system: LiveSystem, agent_user: Any
) -> None:
    page = open_chat()
    answered(page, "Hello there")
    conversation = conversation_of(page)
    page.locator("#handoff").click()
    expect(page.locator("#talk-status")).to_contain_text("asked for a person")

    agent_context = signed_in_context(browser, system, agent_user)
    agent_context.add_init_script(SENT_RECORDER)
    agent = agent_context.new_page()
    agent.set_default_timeout(TIMEOUT_MS)
    agent.goto(f"{system.url}/agent/conversations/{conversation.id}/")
    agent.wait_for_selector("#transcript-page[data-watching='1']")

    page.locator("#input").press_sequentially("My parcel", delay=30)
    expect(agent.locator("#customer-typing")).to_have_text("Customer is typing…")
    expect(agent.locator("#customer-typing")).to_be_hidden(timeout=8000)  # gone after ~5 s

    agent.locator("#takeover").click()
    expect(page.locator("li.msg.system .body")).to_have_text(["Dana joined the conversation."])
    expect(agent.locator("li.msg.system .body")).to_have_text(["Dana joined the conversation."])
    agent.locator("#agent-input").press_sequentially("Hello", delay=30)
    expect(page.locator("#typing")).to_have_text("Dana is typing…")
    agent.keyboard.press("Enter")
    expect(page.locator("li.msg.agent .body")).to_have_text(["Hello"])
    expect(page.locator("#typing")).to_be_hidden()
    sent = [f["type"] for f in page.evaluate("window.__sent")]
    assert 1 <= sent.count("typing") <= 2  # throttled: one every 2 s while typing

    agent.locator("#hand-back").click()
    expect(page.locator("li.msg.system .body")).to_have_text(
        ["Dana joined the conversation.", "Dana left; the assistant answers again."]
    )
    agent_context.close()
    assert Conversation.objects.get(id=conversation.id).messages.filter(role="system").count() == 2


@pytest.mark.skipif(not os.environ.get("CHAT_SCREENSHOTS"), reason="CHAT_SCREENSHOTS=1 writes docs/img/chat-*.png")
def test_screenshots_of_the_chat(system: LiveSystem, browser: Any) -> None:
    """The PNGs under docs/img: bench/screenshots.py against this module's live system."""
    from bench.screenshots import shoot

    written = shoot(
        browser, system.url + "/", "chat", Path(settings.BASE_DIR) / "docs" / "img", message=MARKDOWN_PROMPT
    )
    assert len(written) == 4 and all(path.stat().st_size < 200_000 for path in written)
