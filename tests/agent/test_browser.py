"""Customer and agent in real headless Chromium, against uvicorn and the fake inference worker.

Two browser contexts: the customer asks for a person, the agent sees the alert, takes over and
replies, the customer sees it live, the agent hands back and the bot answers again. Then the
agent's pages on their own: everything a customer or the model wrote (and tags and notes) shown
as text, before and after the live redraws; the reply's latency and model version kept once the
socket is live; the keyboard; inbox flags and filters kept true by live events.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from conversations import events, selectors
from conversations.chat import services as chat_services
from conversations.models import Conversation, Correction, Customer, Feedback, Message
from conversations.workspace import services as workspace_services
from finetuning.models import ModelVersion
from tests.e2e.browser import signed_in_context
from tests.e2e.live import LiveSystem

from .conftest import add_messages

PAYLOAD = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
IMG = '<img src=x onerror="window.__xss=1">'
SCRIPT = "<script>window.__xss=1</script>"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


# Stands in for the Web Audio API, counting the tones the inbox plays.
COUNT_BEEPS = """
window.__beeps = 0;
window.AudioContext = class {
  constructor() { this.currentTime = 0; this.destination = {}; }
  resume() {}
  createOscillator() {
    window.__beeps += 1;
    const node = { frequency: { value: 0 }, type: "", connect: () => node, start() {}, stop() {} };
    return node;
  }
  createGain() {
    const gain = { value: 0, setValueAtTime() {}, linearRampToValueAtTime() {},
                   exponentialRampToValueAtTime() {} };
    const node = { gain, connect: () => node };
    return node;
  }
};
"""


def test_a_customer_asks_for_a_person_and_an_agent_takes_over_live(
    fake_system: LiveSystem, browser: Any, agent_user: Any
) -> None:
    dialogs: list[str] = []
    agent = signed_in_context(browser, fake_system, agent_user).new_page()
    agent.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    agent.add_init_script(COUNT_BEEPS)
    agent.goto(fake_system.url + "/agent/")
    agent.wait_for_selector("#agent-connection.online")
    agent.check("#sound")  # the audible alert is the agent's choice; the click also unlocks audio
    assert agent.evaluate("window.__beeps") == 1  # a sample beep on switching it on

    customer = browser.new_context().new_page()
    customer.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    customer.goto(fake_system.url + "/")
    customer.wait_for_selector("#connection.online")
    # The status line is filled by the history frame, which may land after the socket opens.
    customer.wait_for_selector("#talk-status:has-text('automated assistant')")

    # The bot answers; the new conversation appears in the agent's inbox without a reload.
    customer.fill("#input", PAYLOAD)
    customer.keyboard.press("Enter")
    customer.wait_for_selector("li.msg.bot.complete")
    agent.wait_for_function("(text) => document.querySelector('#rows td.last')?.textContent === text", arg=PAYLOAD)
    assert agent.locator("#rows img, #rows script").count() == 0

    # The customer rates the reply, changes their mind and says why.
    customer.click("li.msg.bot button[aria-label=Helpful]")
    customer.wait_for_selector("li.msg.bot button[aria-label=Helpful][aria-pressed=true]")
    customer.click("li.msg.bot button[aria-label='Not helpful']")
    customer.select_option("li.msg.bot .rating select", "unhelpful")
    customer.click("li.msg.bot .rating button:text('Send')")
    customer.wait_for_selector("li.msg.bot .rating select")
    wait_for(lambda: Feedback.objects.filter(source="customer", positive=False, reason="unhelpful").exists())

    # The customer asks for a person: the agent sees the alert, opens the conversation, takes over.
    customer.click("#handoff")
    customer.wait_for_function(
        "() => document.querySelector('#talk-status').textContent.includes('asked for a person')"
    )
    agent.wait_for_selector("#alert.waiting:not([hidden])")
    assert "is waiting for an agent" in agent.text_content("#alert")
    agent.wait_for_function("() => window.__beeps === 2")  # and the alert sounded
    agent.wait_for_selector("#rows tr.status-waiting .status-label:text-is('Waiting for an agent')")
    agent.click("#alert a")
    agent.wait_for_selector("#transcript-page[data-watching='1']")
    agent.wait_for_selector("li.msg.bot.complete")
    assert agent.locator("li.msg.customer .body").first.text_content() == PAYLOAD
    assert agent.locator("li.msg img, li.msg script").count() == 0
    agent.click("#takeover")
    agent.wait_for_function("() => document.querySelector('#status').textContent.includes('With an agent')")
    customer.wait_for_function("() => document.querySelector('#talk-status').textContent.includes('Dana (a person)')")

    # The agent's words reach the customer live, under the agent's name; the bot stays silent.
    agent.fill("#agent-input", "Hi, I am Dana. <b>How</b> can I help?")
    agent.keyboard.press("Enter")
    customer.wait_for_selector("li.msg.agent")
    assert customer.text_content("li.msg.agent .body") == "Hi, I am Dana. <b>How</b> can I help?"
    assert customer.text_content("li.msg.agent .who") == "Dana (agent)"
    customer.fill("#input", "My parcel is late")
    customer.keyboard.press("Enter")
    agent.wait_for_function(
        "() => [...document.querySelectorAll('li.msg.customer .body')].some(b => b.textContent === 'My parcel is late')"
    )
    time.sleep(0.5)
    assert customer.locator("li.msg.bot").count() == 1

    # Review by keyboard: next reply, bad, a reason; then write the correction.
    agent.locator("body").click(position={"x": 5, "y": 5})
    agent.keyboard.press("j")
    agent.keyboard.press("b")
    agent.wait_for_selector("li.msg.bot button.bad.chosen")
    agent.keyboard.press("Escape")
    agent.keyboard.press("c")
    agent.keyboard.type("It should have asked for the order number.")
    agent.click("li.msg.bot form.correct button")
    agent.wait_for_function("() => document.querySelector('li.msg.bot form.correct .saved').textContent === 'Saved.'")
    assert Feedback.objects.get(source="agent").positive is False
    assert Correction.objects.get().text == "It should have asked for the order number."

    # The agent hands back: the customer is told, and the bot answers the next message.
    agent.click("#hand-back")
    customer.wait_for_function("() => document.querySelector('#talk-status').textContent.includes('automated')")
    customer.fill("#input", "Thanks, and one more question")
    customer.keyboard.press("Enter")
    customer.wait_for_function("() => document.querySelectorAll('li.msg.bot.complete').length === 2")
    agent.wait_for_function("() => document.querySelectorAll('li.msg.bot.complete').length === 2")

    # Closing asks the agent to confirm, then the customer for a one-click rating.
    agent.click("#close")
    agent.click("#close-confirm")
    customer.wait_for_selector("#csat:not([hidden])")
    customer.click("#csat button[data-score='4']")
    customer.wait_for_function("() => document.querySelector('#csat-thanks').textContent === 'Thank you!'")
    conversation = Conversation.objects.get()
    assert (conversation.status, conversation.satisfaction) == ("closed", 4)
    assert list(conversation.messages.exclude(role="system").values_list("role", flat=True)) == [
        "customer",
        "bot",
        "agent",
        "customer",
        "customer",
        "bot",
    ]
    # Each change of hands left a line in the thread (tests/conversations/test_system_lines.py).
    assert list(conversation.messages.filter(role="system").values_list("text", flat=True)) == [
        "Dana joined the conversation.",
        "Dana left; the assistant answers again.",
        "Dana closed the conversation.",
    ]
    assert Message.objects.get(role="agent").author == agent_user
    assert dialogs == []


def wait_for(condition: Any, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        time.sleep(0.05)


def test_the_agent_pages_show_every_text_as_text_and_keep_latency_flags_and_filters_live(
    fake_system: LiveSystem, browser: Any, agent_user: Any, customer: Customer
) -> None:
    version = ModelVersion.objects.create(name="tuned-7", base_model="base")
    payloaded = Conversation.objects.create(customer=customer)
    _, first, _, second = add_messages(
        payloaded,
        ("customer", IMG + SCRIPT),
        ("bot", "Sure: " + SCRIPT),
        ("customer", "And " + IMG),
        ("bot", IMG + " done"),
    )
    Message.objects.filter(id=first.id).update(
        first_token_at=first.created_at + timedelta(seconds=0.4),
        finished_at=first.created_at + timedelta(seconds=1.5),
        model_version=version,
        model_name="smollm2+tuned-7",
    )
    chat_services.feedback_set(message=first, source="customer", positive=False, reason="wrong", comment="No! " + IMG)
    workspace_services.conversation_review(conversation=payloaded, tags=[IMG, SCRIPT], note=f"Note {SCRIPT} {IMG}")
    plain = Conversation.objects.create(customer=Customer.objects.create(display_name="Bob"))
    (plain_reply,) = add_messages(plain, ("customer", "Hello"), ("bot", "Hi there"))[1:]

    agent = signed_in_context(browser, fake_system, agent_user).new_page()
    dialogs: list[str] = []
    agent.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    # The inbox, filtered to what is not reviewed yet: the last message (the model's) as text.
    agent.goto(fake_system.url + "/agent/?reviewed=no")
    agent.wait_for_selector("#agent-connection.online")
    row, plain_row = f"#rows tr[data-id='{payloaded.id}']", f"#rows tr[data-id='{plain.id}']"
    assert agent.text_content(f"{row} td.last") == IMG + " done"
    assert agent.locator(f"{row} .flag.negative").count() == 1
    assert agent.locator(f"{plain_row} .flag").count() == 0

    # An agent's thumbs down elsewhere: the negative flag appears live.
    rating = chat_services.feedback_set(
        message=plain_reply, source="agent", positive=False, reason="rude", author=agent_user
    )
    assert rating is not None
    publish_to_agents(
        events.review_event(
            str(plain.id), {"message_id": plain_reply.id, "agent_feedback": selectors.feedback_payload(rating)}
        )
    )
    agent.wait_for_selector(f"{plain_row} .flag.negative")

    # Reviewed elsewhere: the flag appears and the row says it no longer matches "not reviewed".
    workspace_services.conversation_review(conversation=payloaded, reviewed=True)
    publish_to_agents(events.review_event(str(payloaded.id), {"reviewed": True}))
    agent.wait_for_selector(f"{row}.stale .flag.reviewed")
    assert "No longer matches the filters (reviewed)" in agent.text_content(f"{row} .stale-note")
    assert agent.locator(f"{plain_row}.stale").count() == 0

    # A live refresh of the row (as a new message brings) redraws it as text and keeps it stale.
    publish_to_agents(events.inbox_event(selectors.inbox_item(payloaded)))
    agent.wait_for_selector(f"{row}.fresh.stale .flag.reviewed")
    assert agent.text_content(f"{row} td.last") == IMG + " done"
    assert agent.locator("#rows img, #rows script").count() == 0
    assert agent.evaluate("typeof window.__xss") == "undefined"

    # The transcript, once the socket is live and has redrawn every message from its history frame.
    agent.goto(f"{fake_system.url}/agent/conversations/{payloaded.id}/")
    agent.wait_for_selector("#agent-connection.online")
    agent.wait_for_selector("#transcript-page[data-watching='1']")
    reply = f"li.msg.bot[data-id='{first.id}']"
    meta = agent.text_content(f"{reply} .meta")
    for expected in ("complete", "first token 0.4 s", "total 1.5 s", "tuned-7", "smollm2+tuned-7"):
        assert expected in meta
    bodies = agent.locator("#transcript li.msg .body").all_text_contents()
    assert bodies == [IMG + SCRIPT, "Sure: " + SCRIPT, "And " + IMG, IMG + " done"]
    assert agent.text_content(f"{reply} .customer-feedback") == f"Customer: 👎 not helpful (wrong) “No! {IMG}”"
    assert agent.input_value("#tags") == f"{IMG}, {SCRIPT}"
    assert agent.input_value("#note") == f"Note {SCRIPT} {IMG}"

    # The reply's end, and the customer's new comment, arrive live: the info line keeps its
    # latency and version; the comment is still text.
    publish_to_conversation(payloaded.id, events.done_event(first.id, "Sure: " + SCRIPT, "complete"))
    comment = {"positive": False, "reason": "unhelpful", "comment": SCRIPT}
    publish_to_agents(events.review_event(str(payloaded.id), {"message_id": first.id, "customer_feedback": comment}))
    agent.wait_for_function(
        "(sel) => document.querySelector(sel).textContent.includes('(unhelpful)')", arg=f"{reply} .customer-feedback"
    )
    assert agent.text_content(f"{reply} .customer-feedback") == f"Customer: 👎 not helpful (unhelpful) “{SCRIPT}”"
    assert agent.text_content(f"{reply} .meta") == meta

    # A reply whose timings the page never had: the message frame's timestamps fill them in.
    Message.objects.filter(id=second.id).update(
        first_token_at=second.created_at + timedelta(seconds=0.25),
        finished_at=second.created_at + timedelta(seconds=2),
        model_name="smollm2",
    )
    second.refresh_from_db()
    assert agent.text_content(f"li.msg[data-id='{second.id}'] .meta") == "complete"
    publish_to_conversation(payloaded.id, events.message_event(selectors.message_payload(second)))
    agent.wait_for_function(
        "(sel) => document.querySelector(sel).textContent === 'complete · first token 0.25 s · total 2.0 s · smollm2'",
        arg=f"li.msg[data-id='{second.id}'] .meta",
    )

    # Keyboard: j, j, k comes back to the first reply; g rates it good; r toggles Reviewed off.
    agent.locator("body").click(position={"x": 5, "y": 5})
    focused = "() => document.activeElement.dataset.id"
    agent.keyboard.press("j")
    assert agent.evaluate(focused) == str(first.id)
    agent.keyboard.press("j")
    assert agent.evaluate(focused) == str(second.id)
    agent.keyboard.press("k")
    assert agent.evaluate(focused) == str(first.id)
    assert agent.locator("li.msg.current").count() == 1
    agent.keyboard.press("g")
    agent.wait_for_selector(f"{reply} button.good.chosen")
    assert Feedback.objects.get(message=first, source="agent").positive is True
    agent.keyboard.press("r")
    agent.wait_for_function("() => document.querySelector('#review-saved').textContent === 'Saved.'")
    assert agent.is_checked("#reviewed") is False
    payloaded.refresh_from_db()
    # The review went through the form and back through the socket: tags and note survive as text.
    assert (payloaded.reviewed, payloaded.tags, payloaded.note) == (False, [IMG, SCRIPT], f"Note {SCRIPT} {IMG}")
    assert agent.input_value("#tags") == f"{IMG}, {SCRIPT}"
    assert agent.input_value("#note") == f"Note {SCRIPT} {IMG}"

    assert agent.locator("#transcript img, #transcript script, .review img, .review script").count() == 0
    assert agent.evaluate("typeof window.__xss") == "undefined"
    assert dialogs == []


def publish_to_agents(payload: dict[str, Any]) -> None:
    """What the server publishes to the agents' group. From a thread of its own: Playwright's sync
    API keeps an event loop in this one, and ``async_to_sync`` refuses to run beside it."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(events.deliver, [events.to_agents(payload)]).result()


def publish_to_conversation(conversation_id: Any, payload: dict[str, Any]) -> None:
    with ThreadPoolExecutor(1) as pool:
        pool.submit(events.deliver, [events.to_conversation(conversation_id, payload)]).result()
