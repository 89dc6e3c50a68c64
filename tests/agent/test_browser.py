"""Customer and agent in real headless Chromium, against daphne and the fake inference worker.

Two browser contexts: the customer asks for a person, the agent sees the alert, takes over and
replies, the customer sees it live, the agent hands back and the bot answers again.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from conversations.models import Conversation, Correction, Feedback, Message
from tests.e2e.browser import signed_in_context
from tests.e2e.live import LiveSystem

PAYLOAD = '<img src=x onerror="alert(1)"><script>alert(2)</script>'

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_customer_asks_for_a_person_and_an_agent_takes_over_live(
    fake_system: LiveSystem, browser: Any, agent_user: Any
) -> None:
    dialogs: list[str] = []
    agent = signed_in_context(browser, fake_system, agent_user).new_page()
    agent.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    agent.goto(fake_system.url + "/agent/")
    agent.wait_for_selector("#agent-connection.online")

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
    agent.wait_for_selector("#rows tr.status-waiting .status:text-is('Waiting for an agent')")
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

    # Closing asks the customer for a one-click rating.
    agent.click("#close")
    customer.wait_for_selector("#csat:not([hidden])")
    customer.click("#csat button[data-score='4']")
    customer.wait_for_function("() => document.querySelector('#csat-thanks').textContent === 'Thank you!'")
    conversation = Conversation.objects.get()
    assert (conversation.status, conversation.satisfaction) == ("closed", 4)
    assert list(conversation.messages.values_list("role", flat=True)) == [
        "customer",
        "bot",
        "agent",
        "customer",
        "customer",
        "bot",
    ]
    assert Message.objects.get(role="agent").author == agent_user
    assert dialogs == []


def wait_for(condition: Any, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        time.sleep(0.05)
