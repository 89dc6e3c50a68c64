"""The widget in real headless Chromium, on host pages served from other origins than the chat's.

The chat (uvicorn and the fake worker) listens on http://127.0.0.1:PORT. An allowed host page is
served from http://localhost:OTHER (another origin: another host name and port); a disallowed one
from http://127.0.0.2:OTHER, which ALLOWED_HOSTS does not name either, so the socket's own origin
check refuses it too. The end-to-end chat needs chat.js's host hook (window.chatHost: the frame's
token).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from conversations.models import Conversation, Customer, WidgetSite
from conversations.workspace import services as workspace_services
from tests.e2e.browser import signed_in_context
from tests.e2e.live import LiveSystem

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LAUNCHER = "chatbot-widget >> button.launcher"  # Playwright's CSS pierces the open shadow root
FRAME = "chatbot-widget >> iframe"


class HostPage:
    """A tiny web server standing in for a shop's site: every path answers ``html``."""

    def __init__(self, bind: str, html: str = "") -> None:
        self.html = html
        page = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                body = page.html.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((bind, 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def host_html(system: LiveSystem, site: WidgetSite, attributes: str = "") -> str:
    return (
        "<!doctype html><html><head><meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<title>Shop</title><style>button { background: hotpink; } body { margin: 0; }</style></head>"
        "<body><h1>The shop</h1><p id='host-text'>Host content</p>"
        f'<script src="{system.url}/widget.js" data-site="{site.key}" {attributes} async></script>'
        "</body></html>"
    )


@pytest.fixture
def shop() -> Iterator[HostPage]:
    page = HostPage("127.0.0.1")  # served as http://localhost:PORT: another origin than 127.0.0.1
    yield page
    page.stop()


@pytest.fixture
def stranger() -> Iterator[HostPage]:
    page = HostPage("127.0.0.2")
    yield page
    page.stop()


@pytest.fixture
def site(fake_system: LiveSystem, shop: HostPage) -> WidgetSite:
    return WidgetSite.objects.create(
        name="Shop", allowed_origins=[f"http://localhost:{shop.port}"], brand_colour="#0f766e", title="Shop help"
    )


def agent_says(conversation: Conversation, agent: Any, text: str) -> None:
    workspace_services.conversation_takeover(conversation=conversation, agent=agent)
    workspace_services.agent_message_send(conversation=conversation, agent=agent, text=text)


def open_host(browser: Any, url: str, **context: Any) -> tuple[Any, Any, list[str]]:
    ctx = browser.new_context(**context)
    page = ctx.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.goto(url)
    return ctx, page, console


def frame_of(page: Any, site: WidgetSite, timeout_s: float = 10) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for frame in page.frames:
            if f"/widget/{site.key}/frame" in frame.url:
                return frame
        page.wait_for_timeout(100)
    raise AssertionError(f"no widget frame among {[f.url for f in page.frames]}")


def test_the_launcher_opens_the_chat_in_an_iframe_of_ours(
    fake_system: LiveSystem, browser: Any, shop: HostPage, site: WidgetSite
) -> None:
    from playwright.sync_api import expect

    shop.html = host_html(fake_system, site)
    ctx, page, _ = open_host(browser, f"http://localhost:{shop.port}/")
    launcher = page.locator(LAUNCHER)
    launcher.wait_for()
    assert launcher.get_attribute("aria-label") == "Open chat"
    assert launcher.get_attribute("aria-expanded") == "false"
    box = launcher.bounding_box()
    assert box["width"] >= 44 and box["height"] >= 44
    assert box["x"] > 1280 - 120  # bottom right
    assert launcher.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(15, 118, 110)"  # the brand
    assert page.locator(FRAME).count() == 0  # nothing loads for a visitor who never opens it
    assert page.evaluate("Object.keys(window).filter(k => k.startsWith('chatbot'))") == ["chatbotWidget"]
    assert page.evaluate("getComputedStyle(document.querySelector('#host-text')).color") == "rgb(0, 0, 0)"

    launcher.click()
    expect(launcher).to_have_attribute("aria-expanded", "true")
    assert launcher.get_attribute("aria-label") == "Close chat"
    iframe = page.locator(FRAME)
    assert iframe.get_attribute("title") == "Shop help chat"
    frame = frame_of(page, site)
    frame.wait_for_selector("#composer")  # our chat page, loaded inside the host's page
    assert frame.url == f"{fake_system.url}/widget/{site.key}/frame"
    panel = iframe.bounding_box()
    assert (round(panel["width"]), round(panel["height"])) == (380, 600)

    page.keyboard.press("Escape")  # focus is in the frame: it tells the loader, by postMessage
    expect(launcher).to_have_attribute("aria-expanded", "false")
    assert page.evaluate("document.activeElement.shadowRoot.activeElement.className") == "launcher"
    expect(iframe).to_be_hidden()
    launcher.press("Enter")  # the keyboard opens it again
    expect(launcher).to_have_attribute("aria-expanded", "true")
    ctx.close()


def test_on_a_phone_the_open_widget_fills_the_screen_without_overflow(
    fake_system: LiveSystem, browser: Any, shop: HostPage, site: WidgetSite
) -> None:
    shop.html = host_html(fake_system, site)
    ctx, page, _ = open_host(
        browser, f"http://localhost:{shop.port}/", viewport={"width": 390, "height": 844}, has_touch=True
    )
    page.locator(LAUNCHER).click()
    frame_of(page, site).wait_for_selector("#composer")
    box = page.locator(FRAME).bounding_box()
    assert (box["x"], box["y"], box["width"], box["height"]) == (0, 0, 390, 844)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    ctx.close()


def test_a_disallowed_origin_gets_no_widget_and_no_frame(
    fake_system: LiveSystem, browser: Any, stranger: HostPage, site: WidgetSite
) -> None:
    stranger.html = host_html(fake_system, site)
    ctx, page, console = open_host(browser, f"http://127.0.0.2:{stranger.port}/")
    page.wait_for_function("() => performance.getEntriesByType('resource').some(e => e.name.includes('/config'))")
    page.wait_for_timeout(300)
    assert page.locator("chatbot-widget").count() == 0  # the config refused this origin: no launcher
    assert any("is not allowed to embed this chat" in line for line in console), console

    # Embedding the frame by hand: the browser refuses it (CSP frame-ancestors), our page never loads.
    page.evaluate(
        "src => { const f = document.createElement('iframe'); f.id = 'forced'; f.src = src;"
        " document.body.appendChild(f); }",
        f"{fake_system.url}/widget/{site.key}/frame",
    )
    page.wait_for_timeout(1500)
    forced = next(f for f in page.frames if f != page.main_frame)
    assert f"/widget/{site.key}/frame" not in forced.url or forced.query_selector("#composer") is None
    assert forced.url.startswith("chrome-error://") or forced.url == "about:blank", forced.url
    assert any("frame-ancestors" in line for line in console), console
    ctx.close()


def test_a_disallowed_origin_cannot_start_a_session_nor_open_a_socket(
    fake_system: LiveSystem, browser: Any, stranger: HostPage, site: WidgetSite
) -> None:
    """The forged flows a page elsewhere could try, from a real browser: both are refused."""
    victim = Customer.objects.create(site=site)
    victim_conversation = Conversation.objects.create(customer=victim)
    from conversations.widget.services import customer_token

    stranger.html = "<!doctype html><title>Elsewhere</title><p>nothing</p>"
    ctx, page, _ = open_host(browser, f"http://127.0.0.2:{stranger.port}/")
    before = Customer.objects.count()
    outcome = page.evaluate(
        """url => fetch(url, {method: 'POST', body: '{}', headers: {'Content-Type': 'text/plain'}})
             .then(r => 'answered ' + r.status, e => 'blocked')""",
        f"{fake_system.url}/widget/{site.key}/session",
    )
    assert outcome == "blocked"  # 403 without CORS headers: the page reads nothing either
    assert Customer.objects.count() == before
    ws_url = fake_system.url.replace("http://", "ws://") + f"/ws/chat/?token={customer_token(customer=victim)}"
    frames = page.evaluate(
        """url => new Promise(resolve => {
             const got = []; const ws = new WebSocket(url);
             ws.onmessage = m => got.push(m.data);
             ws.onclose = e => resolve({code: e.code, got});
           })""",
        ws_url,
    )
    assert frames["got"] == [] and frames["code"] == 1006  # refused at the handshake
    assert str(victim_conversation.id) not in str(frames)
    ctx.close()


def test_a_customer_chats_in_the_widget_and_gets_a_streamed_reply(
    fake_system: LiveSystem, browser: Any, shop: HostPage, site: WidgetSite, agent_user: Any
) -> None:
    shop.html = host_html(fake_system, site)
    host_url = f"http://localhost:{shop.port}/product/42"
    ctx, page, _ = open_host(browser, host_url)
    page.locator(LAUNCHER).click()
    frame = frame_of(page, site)
    frame.wait_for_selector("#connection.online")
    frame.fill("#input", "Where is my parcel?")
    frame.press("#input", "Enter")
    # Any worker of the test run may answer (the session's real-model one reads the same stream):
    # what is checked is that a reply streams into the frame and finishes, not its words.
    frame.wait_for_selector("li.msg.bot.complete", timeout=120_000)
    frame.wait_for_selector("#stop", state="hidden")  # the reply is finished: Esc now closes, not stops
    token = page.evaluate(f"localStorage.getItem('chatbot-widget:{site.key}:anonymous')")
    assert token
    customer = Customer.objects.get(site=site)
    conversation = Conversation.objects.get(customer=customer)
    assert conversation.page_url == host_url and "Chrome" in conversation.user_agent

    # Closed, an agent's reply counts as unread on the launcher.
    page.keyboard.press("Escape")
    with ThreadPoolExecutor(1) as pool:  # off Playwright's event loop: the services' frames go out on commit
        pool.submit(agent_says, conversation, agent_user, "Dana here.").result()
    badge = page.locator("chatbot-widget >> .badge")
    badge.wait_for(state="visible")
    assert badge.text_content() == "1"

    # Another page of the shop: the same customer, the same conversation, from the stored token.
    page.goto(f"http://localhost:{shop.port}/cart")
    page.locator(LAUNCHER).click()
    frame = frame_of(page, site)
    frame.wait_for_function("() => document.querySelector('#messages').textContent.includes('Dana here.')")
    assert Customer.objects.filter(site=site).count() == 1
    ctx.close()


def test_two_browsers_are_two_customers_who_never_see_each_other(
    fake_system: LiveSystem, browser: Any, shop: HostPage, site: WidgetSite
) -> None:
    shop.html = host_html(fake_system, site)
    pages = []
    for text in ("Alice's secret question", "Bob's question"):
        ctx, page, _ = open_host(browser, f"http://localhost:{shop.port}/")
        page.locator(LAUNCHER).click()
        frame = frame_of(page, site)
        frame.wait_for_selector("#connection.online")
        frame.fill("#input", text)
        frame.press("#input", "Enter")
        frame.wait_for_function("t => document.querySelector('#messages').textContent.includes(t)", arg=text)
        pages.append((ctx, frame))
    bob = pages[1][1]
    assert "Alice's secret question" not in bob.evaluate("document.querySelector('#messages').textContent")
    assert Customer.objects.filter(site=site).count() == 2
    for ctx, _ in pages:
        ctx.close()


def test_staff_add_a_site_copy_its_snippet_and_preview_it(
    fake_system: LiveSystem, browser: Any, admin_user: Any
) -> None:
    ctx = signed_in_context(browser, fake_system, admin_user)
    page = ctx.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.goto(fake_system.url + "/agent/")
    page.click("#nav-widget")
    page.click("#site-new")
    page.fill("#id_name", "Docs")
    page.fill("#id_origins", "https://docs.example.com/page")
    page.click("#site-save")
    assert "no path" in page.text_content(".field-error")  # said next to the field, nothing saved
    page.fill("#id_origins", "https://docs.example.com")
    page.click("#site-save")
    site = WidgetSite.objects.get(name="Docs")
    snippet = page.text_content("#snippet")
    assert snippet == f'<script src="{fake_system.url}/widget.js" data-site="{site.key}" async></script>'
    page.click("#copy-snippet")
    page.wait_for_function("() => document.querySelector('#copy-status').textContent !== ''")
    page.click("#preview-link")
    page.locator(LAUNCHER).click()
    frame_of(page, site).wait_for_selector("#composer")  # framed by our own page: 'self'
    # Live before closing: the frame's socket has done its database work (customer, conversation,
    # history), which otherwise overlapped the test's teardown flush and deadlocked it in CI.
    frame_of(page, site).wait_for_selector("#connection.online")
    assert not [line for line in console if "Content Security Policy" in line], console
    ctx.close()
