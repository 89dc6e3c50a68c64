"""The chat page in real headless Chromium when things go wrong: a reload mid-reply, the web
process going away under an open socket, a new conversation, no inference worker, and markup
written by the model. Against uvicorn and the fake engine with scripted replies (no torch), so
each reply's text, length and pace are known in advance."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from django.conf import settings

from conversations.models import Conversation, Message
from tests.e2e.live import LiveSystem

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

T = TypeVar("T")
TIMEOUT_MS = 60_000  # a slow, shared 2-core machine: generous, and every wait is on page state

STEP_DELAY_S = 0.05  # one word per step: a 300-word reply streams for 15 s at the very least
LONG_PROMPT = "Tell me a very long story, please."
LONG_REPLY = " ".join(f"story{i:03d}" for i in range(300))
DROP_PROMPT = "Another very long story, please."
DROP_REPLY = " ".join(f"saga{i:03d}" for i in range(500))  # still streaming when the page is back
XSS_PROMPT = "Show me some markup."
XSS_REPLY = (
    'Look: <img src=x onerror="window.__xss=1"> and <script>window.__xss=1</script> and <b>bold</b> and'
    " [a markdown link](javascript:window.__xss=1) done."  # replies are markdown now: no javascript: link
)
DEFAULT_REPLY = "Thanks for writing in: how can I help?"
SCRIPT = {LONG_PROMPT: LONG_REPLY, DROP_PROMPT: DROP_REPLY, XSS_PROMPT: XSS_REPLY}

# Runs in every document before chat.js: counts socket attempts (the backoff) and records every
# distinct text each bubble showed, with its status, so a test can check there was never a
# duplicated or missing piece, not just the end state.
RECORDER = """
window.__wsAttempts = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) { super(...args); window.__wsAttempts.push(performance.now()); }
};
window.__texts = {};
document.addEventListener("DOMContentLoaded", () => {
  const list = document.getElementById("messages");
  const record = () => list.querySelectorAll("li.msg[data-id]").forEach((li) => {
    const seen = (window.__texts[li.dataset.id] ||= []);
    const text = li.querySelector(".body").textContent;
    const status = ["pending", "streaming", "complete", "cancelled", "failed"].find((s) => li.classList.contains(s));
    const last = seen[seen.length - 1];
    if (!last || last.text !== text || last.status !== status) seen.push({ text, status });
  });
  new MutationObserver(record).observe(list, { childList: true, subtree: true, characterData: true });
});
"""


@pytest.fixture(scope="module")
def system(browser: Any, django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveSystem]:
    """The module's own live system, its ``--fake`` worker swapped for one answering ``SCRIPT``.
    Under a Redis prefix of its own: the session's real-model worker, when an earlier module
    started it, would otherwise answer these requests too."""
    system = LiveSystem(fake=True, prefix=f"{settings.REDIS_KEY_PREFIX}:resilience")
    system.stop_worker()
    start_worker(system)
    yield system
    system.stop()


def start_worker(system: LiveSystem) -> None:
    system.start_scripted_worker(SCRIPT, default_reply=DEFAULT_REPLY, step_delay_s=STEP_DELAY_S)
    system.wait_for_worker()


@pytest.fixture
def up(system: LiveSystem) -> Iterator[LiveSystem]:
    """Each test starts, and leaves the next one, with the web process and a worker running."""
    yield system
    if system.web.poll() is not None:
        system.start_web()
    if system.worker.poll() is not None:
        start_worker(system)


def expect(locator: Any) -> Any:
    """Playwright's ``expect`` with this module's timeout (the global one is left alone)."""
    from playwright.sync_api import Expect

    patient = Expect()
    patient.set_options(timeout=TIMEOUT_MS)
    return patient(locator)


def wait_for(find: Callable[[], T | None], what: str, timeout_s: float = 60) -> T:
    """Poll the database (or anything) until ``find`` returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while not (found := find()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return found


@pytest.fixture
def open_chat(browser: Any, up: LiveSystem) -> Iterator[Callable[[], Any]]:
    """Open the chat page as a new customer (a browser context of its own), once its history has
    arrived; the contexts are closed after the test."""
    contexts: list[Any] = []

    def open_page() -> Any:
        context = browser.new_context()
        contexts.append(context)
        context.add_init_script(RECORDER)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(up.url + "/")
        wait_for_history(page)
        return page

    yield open_page
    for context in contexts:
        context.close()


def wait_for_history(page: Any) -> None:
    """The socket is up and the ``history`` frame drawn (it sets who the customer talks to)."""
    expect(page.locator("#connection")).to_have_class("badge online")
    expect(page.locator("#talk-status")).not_to_be_empty()


def send(page: Any, text: str) -> None:
    page.fill("#input", text)
    page.keyboard.press("Enter")


def reply_to(text: str) -> Message:
    """The bot reply to the customer message ``text`` (stored with it, in the same transaction)."""

    def find() -> Message | None:
        asked = Message.objects.filter(role=Message.Role.CUSTOMER, text=text).first()
        if asked is None:
            return None
        replies = Message.objects.filter(conversation_id=asked.conversation_id, role=Message.Role.BOT, id__gt=asked.id)
        return replies.order_by("id").first()

    return wait_for(find, f"the reply to {text!r}")


def bubble(page: Any, message: Message) -> Any:
    return page.locator(f'li.msg[data-id="{message.id}"]')


def wait_for_words(page: Any, message: Message, words: int) -> None:
    """The reply is streaming in the page and shows at least ``words`` words."""
    page.wait_for_function(
        """([id, words]) => {
          const li = document.querySelector(`li.msg[data-id="${id}"]`);
          return li && li.classList.contains("streaming")
            && li.querySelector(".body").textContent.split(" ").length >= words;
        }""",
        arg=[message.id, words],
        timeout=TIMEOUT_MS,
    )


def texts_seen(page: Any, message: Message) -> list[dict[str, str]]:
    return page.evaluate("(id) => window.__texts[id] || []", str(message.id))


def assert_only_prefixes(seen: list[dict[str, str]], final: str) -> None:
    """Every text the bubble ever showed was a prefix of the final one: nothing doubled, nothing skipped."""
    wrong = [entry["text"] for entry in seen if not final.startswith(entry["text"])]
    assert not wrong, f"the bubble showed text that is not a prefix of the reply: {wrong[0][-120:]!r}"
    lengths = [len(entry["text"]) for entry in seen]
    assert lengths == sorted(lengths), f"the text went backwards: {lengths}"


def test_a_reload_mid_reply_shows_the_partial_text_then_streams_it_to_the_end(up: LiveSystem, open_chat: Any) -> None:
    page = open_chat()
    send(page, LONG_PROMPT)
    reply = reply_to(LONG_PROMPT)
    wait_for_words(page, reply, 10)

    # A delta saved just before the reloaded socket reads its history, and published just after,
    # arrives holding text the history already has. The race is narrow, so the test forces it:
    # right after the history frame, the page also gets such a delta (the protocol's overlap case).
    overlaps: list[dict[str, Any]] = []

    def overlap_after_history(route: Any) -> None:
        server = route.connect_to_server()

        def forward(raw: str | bytes) -> None:
            route.send(raw)
            frame = json.loads(raw)
            if frame["type"] != "history":
                return
            for message in frame["messages"]:
                if message["role"] == "bot" and message["status"] == "streaming" and len(message["text"]) > 20:
                    text = message["text"]
                    overlaps.append({"type": "delta", "message_id": message["id"], "offset": len(text) - 20})
                    overlaps[-1]["text"] = text[-20:]
                    route.send(json.dumps(overlaps[-1]))

        server.on_message(forward)

    page.route_web_socket(re.compile(r"/ws/chat/"), overlap_after_history)
    page.reload()
    wait_for_history(page)
    expect(bubble(page, reply)).to_have_class("msg bot complete")
    assert overlaps, "the reloaded page's history did not hold a streaming reply"

    reply.refresh_from_db()
    assert reply.status == Message.Status.COMPLETE and reply.text == LONG_REPLY
    assert page.locator("li.msg.bot .body").all_text_contents() == [LONG_REPLY]
    assert page.locator("li.msg.customer .body").all_text_contents() == [LONG_PROMPT]

    seen = texts_seen(page, reply)  # since the reload only: the recorder starts again with the document
    first = seen[0]
    assert first["status"] == "streaming" and 0 < len(first["text"]) < len(LONG_REPLY), (
        f"the reloaded page did not start from the partial reply: {first['status']} {len(first['text'])} chars"
    )
    assert len([entry for entry in seen if entry["status"] == "streaming"]) >= 3, "the reply did not stream on"
    assert_only_prefixes(seen, LONG_REPLY)


def test_a_dropped_socket_reconnects_with_backoff_and_recovers_what_was_missed(up: LiveSystem, open_chat: Any) -> None:
    page = open_chat()
    page.evaluate("window.__sameDocument = true")
    send(page, DROP_PROMPT)
    reply = reply_to(DROP_PROMPT)
    wait_for_words(page, reply, 10)

    up.stop_web()
    badge = page.locator("#connection")
    expect(badge).to_have_text("Reconnecting…")
    expect(badge).to_have_class("badge offline")
    shown = bubble(page, reply).locator(".body").text_content() or ""
    # The worker writes on while the page is cut off.
    wait_for(lambda: len(Message.objects.get(id=reply.id).text) > len(shown) + 100, "the reply to grow meanwhile")
    produced_offline = len(Message.objects.get(id=reply.id).text)
    assert len(bubble(page, reply).locator(".body").text_content() or "") < produced_offline

    # Typed while offline: queued in the page (Send, not Stop: a stop could not reach the server).
    expect(page.locator("#send")).to_be_visible()
    expect(page.locator("#stop")).to_be_hidden()
    offline_text = "Typed while the connection was down."
    send(page, offline_text)
    expect(page.locator("li.msg.customer.unsent .body")).to_have_text(offline_text)
    expect(page.locator("#notice")).to_contain_text("offline")
    assert page.input_value("#input") == ""

    # Backoff: wait for the initial socket and two failed retries before bringing the server back.
    page.wait_for_function("() => window.__wsAttempts.length >= 3")
    texts_before = len(texts_seen(page, reply))
    up.start_web()
    expect(badge).to_have_class("badge online")
    expect(badge).to_have_text("Connected")
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded instead of reconnecting"

    attempts = page.evaluate("window.__wsAttempts")
    gaps = [(later - earlier) / 1000 for earlier, later in zip(attempts[1:], attempts[2:], strict=False)]
    for k, gap in enumerate(gaps, start=1):  # retries wait 0.5 s, doubling to 10 s
        expected = min(0.5 * 2**k, 10)
        assert 0.8 * expected <= gap <= expected + 5, f"retry gaps {gaps} do not back off as 1, 2, 4… s"

    # The text written while disconnected arrives with the history, and the reply streams to its end.
    expect(bubble(page, reply)).to_have_class("msg bot complete")
    reply.refresh_from_db()
    assert reply.status == Message.Status.COMPLETE and reply.text == DROP_REPLY
    assert bubble(page, reply).locator(".body").text_content() == DROP_REPLY
    seen = texts_seen(page, reply)
    back = seen[texts_before]  # what the reconnected socket's history showed
    assert len(back["text"]) >= produced_offline, "the missed text did not come back at once"
    assert back["status"] == "streaming", "the reply was over before the page reconnected: make it longer"
    assert_only_prefixes(seen, DROP_REPLY)

    # The queued message went out once the reply was over, was stored once and answered.
    expect(page.locator("li.msg.customer.unsent")).to_have_count(0)
    answer = reply_to(offline_text)
    expect(bubble(page, answer)).to_have_class("msg bot complete")
    expect(bubble(page, answer).locator(".body")).to_have_text(DEFAULT_REPLY)
    assert Message.objects.filter(role=Message.Role.CUSTOMER, text=offline_text).count() == 1
    assert page.locator("li.msg.customer .body").all_text_contents() == [DROP_PROMPT, offline_text]
    assert page.evaluate("sessionStorage.getItem('chat.outbox')") == "[]"
    expect(page.locator("#notice")).to_be_hidden()  # no "please wait" refusal on the way
    assert page.input_value("#input") == ""

    page.reload()  # and the whole of it is what the database holds
    wait_for_history(page)
    expect(page.locator("li.msg .body")).to_have_text([DROP_PROMPT, DROP_REPLY, offline_text, DEFAULT_REPLY])


def echo_after_the_reply(route: Any) -> None:
    """Proxy the chat socket, holding the first echo of a customer message back until a bot
    message frame has passed."""
    server = route.connect_to_server()
    held: list[str | bytes] = []
    state = {"holding": True}

    def forward(raw: str | bytes) -> None:
        frame = json.loads(raw)
        kind = frame["message"]["role"] if frame["type"] == "message" else ""
        if state["holding"] and kind == "customer":
            held.append(raw)
            return
        route.send(raw)
        if held and kind == "bot":
            state["holding"] = False
            for raw_echo in held:
                route.send(raw_echo)

    server.on_message(forward)


def test_new_conversation_starts_empty_and_a_reload_stays_on_it(up: LiveSystem, open_chat: Any) -> None:
    page = open_chat()
    first_text = "A question in the first conversation."
    send(page, first_text)
    first_reply = reply_to(first_text)
    expect(bubble(page, first_reply)).to_have_class("msg bot complete")
    old = Conversation.objects.get(id=first_reply.conversation_id)

    page.click("#new-conversation")
    expect(page.locator("li.msg")).to_have_count(0)
    old.refresh_from_db()
    assert old.status == Conversation.Status.CLOSED
    new = wait_for(
        lambda: Conversation.objects.filter(customer_id=old.customer_id).exclude(id=old.id).first(),
        "the new conversation",
    )
    assert new.status == Conversation.Status.BOT and not new.messages.exists()
    expect(page.locator("#talk-status")).to_have_text("You are talking to our automated assistant.")

    # The worker may announce its reply before the web process echoes the customer's message (it
    # is queued on commit): after the reload, the page gets them in that order, every time.
    page.route_web_socket(re.compile(r"/ws/chat/"), echo_after_the_reply)
    page.reload()
    wait_for_history(page)
    expect(page.locator("li.msg")).to_have_count(0)
    second_text = "A question in the second conversation."
    send(page, second_text)
    second_reply = reply_to(second_text)
    expect(bubble(page, second_reply)).to_have_class("msg bot complete")
    assert second_reply.conversation_id == new.id
    expect(page.locator("li.msg .body")).to_have_text([second_text, DEFAULT_REPLY])
    assert list(old.messages.values_list("text", flat=True)) == [first_text, DEFAULT_REPLY]
    assert Conversation.objects.filter(customer_id=old.customer_id).count() == 2


def test_without_a_worker_the_message_waits_and_is_answered_when_one_starts(up: LiveSystem, open_chat: Any) -> None:
    up.stop_worker()
    assert not up.worker_online()
    page = open_chat()
    page.evaluate("window.__sameDocument = true")
    notice = page.locator("#notice")
    expect(notice).to_have_text("The assistant is starting up; messages will be answered as soon as it is ready.")

    text = "Is anybody there?"
    send(page, text)
    reply = reply_to(text)
    waiting = bubble(page, reply)
    expect(waiting).to_have_class("msg bot pending")
    expect(waiting.locator(".meta")).to_have_text("Waiting for the assistant…")
    expect(notice).to_have_text(
        "The assistant is not running right now. Your message is saved and will be answered as soon as it is back."
    )
    expect(page.locator("#stop")).to_be_visible()  # the reply is on its way as far as the page knows
    assert Message.objects.get(id=reply.id).status == Message.Status.PENDING

    start_worker(up)
    expect(waiting).to_have_class("msg bot complete")
    expect(waiting.locator(".body")).to_have_text(DEFAULT_REPLY)
    expect(notice).to_be_hidden()
    assert page.evaluate("window.__sameDocument") is True
    reply.refresh_from_db()
    assert reply.status == Message.Status.COMPLETE and reply.text == DEFAULT_REPLY


def test_markup_written_by_the_model_is_shown_as_text(up: LiveSystem, open_chat: Any) -> None:
    page = open_chat()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    send(page, XSS_PROMPT)
    reply = reply_to(XSS_PROMPT)

    def assert_inert() -> None:
        shown = bubble(page, reply)
        expect(shown).to_have_class("msg bot complete")
        expect(shown.locator(".body")).to_have_text(XSS_REPLY)
        assert shown.locator(".body img, .body script, .body b, .body a").count() == 0
        assert page.locator("#messages img, #messages script").count() == 0
        assert page.evaluate("typeof window.__xss") == "undefined"

    assert_inert()
    reply.refresh_from_db()
    assert reply.text == XSS_REPLY
    page.reload()
    wait_for_history(page)
    assert_inert()
    assert dialogs == []


def test_a_conversation_closed_while_offline_is_shown_closed_after_the_reconnect(
    up: LiveSystem, open_chat: Any
) -> None:
    page = open_chat()
    page.evaluate("window.__sameDocument = true")
    send(page, "Just a quick question.")
    answer = reply_to("Just a quick question.")
    expect(bubble(page, answer)).to_have_class("msg bot complete")
    conversation = Conversation.objects.get(id=answer.conversation_id)

    up.stop_web()
    expect(page.locator("#connection")).to_have_text("Reconnecting…")
    conversation.status = Conversation.Status.CLOSED  # an agent closed it meanwhile
    conversation.save(update_fields=["status"])
    up.start_web()

    expect(page.locator("#connection")).to_have_class("badge online")
    assert page.evaluate("window.__sameDocument") is True
    # The same conversation, now closed: its messages, and the rating question.
    expect(page.locator("#csat")).to_be_visible()
    expect(page.locator("li.msg .body")).to_have_text(["Just a quick question.", DEFAULT_REPLY])
    assert Conversation.objects.filter(customer=conversation.customer).count() == 1
