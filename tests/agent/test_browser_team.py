"""A team on a shift, in real headless Chromium against uvicorn and the scripted fake worker: two
agents (Dana and Eli, each a signed-in browser context) and two customers on the chat page.
Assignment and the views update live on both agents' screens; unread counts rise and clear; a
handoff notifies (``window.Notification`` stubbed, permission granted) and the title badge
changes; the export of an empty selection is the filtered list; Close asks first; the controls
are disabled for the agent who does not hold the conversation; nothing scrolls sideways at 390×844.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from conversations.models import Conversation, Customer, Message
from tests.e2e import browser as browser_pages
from tests.e2e.browser import signed_in_context
from tests.e2e.live import LiveSystem

from .conftest import add_messages

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TIMEOUT_MS = 30_000
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}

# Before agent.js: desktop notifications granted, and every one shown recorded.
NOTIFICATIONS = """
window.__notifications = [];
window.Notification = class {
  constructor(title, options) { this.title = title; this.options = options || {}; window.__notifications.push(this); }
  close() {}
  static requestPermission() { window.Notification.permission = "granted"; return Promise.resolve("granted"); }
};
window.Notification.permission = "default";
"""


@pytest.fixture(scope="module")
def system(browser: Any, django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveSystem]:
    system = LiveSystem(fake=True, prefix=f"{settings.REDIS_KEY_PREFIX}:inbox-team")
    yield system
    system.stop()


def expect(locator: Any) -> Any:
    from playwright.sync_api import Expect

    return Expect()(locator)


def agent_page(browser: Any, system: LiveSystem, user: User, path: str = "/agent/", **context: Any) -> Any:
    ctx = signed_in_context(browser, system, user, **context)
    ctx.add_init_script(NOTIFICATIONS)
    return browser_pages.agent_page(ctx, system, path, timeout_ms=TIMEOUT_MS)


def customer_page(browser: Any, system: LiveSystem) -> Any:
    return browser_pages.customer_page(browser, system, timeout_ms=TIMEOUT_MS)


def say(page: Any, text: str) -> Conversation:
    page.fill("#input", text)
    page.keyboard.press("Enter")
    expect(page.locator("li.msg.customer .body", has_text=text)).to_be_visible()
    for _ in range(100):  # shown at once; stored when the server has it
        stored = Message.objects.filter(role="customer", text=text).order_by("-id").first()
        if stored is not None:
            return stored.conversation
        page.wait_for_timeout(100)
    raise AssertionError(f"{text!r} was never stored")


def row(page: Any, conversation: Conversation) -> Any:
    return page.locator(f"#rows tr[data-id='{conversation.id}']")


def fits(page: Any) -> None:
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth"), page.evaluate(
        "[document.documentElement.scrollWidth, innerWidth]"
    )


def test_two_agents_and_two_customers_on_a_shift(
    browser: Any, system: LiveSystem, agent_user: User, second_agent: User
) -> None:
    dana = agent_page(browser, system, agent_user)
    eli = agent_page(browser, system, second_agent, "/agent/?view=unassigned")
    dana.click("#notify-enable")  # asks the browser for permission (granted by the stub)
    expect(dana.locator("#notify-state")).to_have_text("Desktop notifications on")
    eli.click("#notify-enable")

    # Customer A writes: a new row on both screens, its Messages and Unread cells filled.
    alice = customer_page(browser, system)
    first = say(alice, "Hello, where is my parcel?")
    expect(alice.locator("li.msg.bot.complete")).to_have_count(1)
    for page in (dana, eli):
        expect(row(page, first).locator(".count")).to_have_text("2")  # the question and the bot's answer
        expect(row(page, first).locator(".unread-badge")).to_have_text("1")
    expect(dana.locator("#tab-all .count")).to_have_text("1")
    expect(dana.locator("#tab-all .unread")).to_have_text("1 unread")

    # Customer B asks for a person: waiting, first on both screens, notified, the badge counts it.
    bob = customer_page(browser, system)
    second = say(bob, "I want to talk to a human")
    for page in (dana, eli):
        expect(page.locator("#rows tr").first).to_have_attribute("data-id", str(second.id))
        expect(row(page, second).locator(".wait")).to_contain_text("waiting")
        expect(page.locator("#waiting-count")).to_be_visible()
        expect(page.locator("#waiting-count")).to_contain_text("1 conversation waiting")
        page.wait_for_function("() => window.__notifications.some((n) => n.title.includes('asks for a person'))")
        expect(page).to_have_title("(1) Inbox · Agent workspace")  # none mine yet, one waiting
    expect(dana.locator("#tab-waiting .count")).to_have_text("1")

    # Dana takes Alice's conversation: Eli's Unassigned view loses it, both see who has it.
    row(dana, first).locator("button.take").click()
    expect(row(dana, first).locator("select.assign")).to_have_value(str(agent_user.id))
    expect(row(dana, first).locator("button.take")).to_be_hidden()
    expect(row(eli, first)).to_have_count(0)
    expect(eli.locator("#tab-unassigned .count")).to_have_text("1")
    expect(dana.locator("#tab-mine .count")).to_have_text("1")
    expect(dana).to_have_title("(2) Inbox · Agent workspace")  # Alice's unread one, and Bob waiting

    # Eli gives Bob to Dana from his screen: it leaves his Unassigned view, Dana's select follows.
    row(eli, second).locator("select.assign").select_option(str(agent_user.id))
    expect(row(eli, second)).to_have_count(0)
    expect(row(dana, second).locator("select.assign")).to_have_value(str(agent_user.id))
    expect(dana.locator("#tab-mine .count")).to_have_text("2")

    # Alice writes again in Dana's conversation: it moves up (after the waiting one), its unread
    # count rises, and Dana is notified of a new message in a conversation of hers.
    say(alice, "Any news?")
    expect(row(dana, first).locator(".unread-badge")).to_have_text("2")
    dana.wait_for_function("() => window.__notifications.some((n) => n.title.startsWith('New message from'))")
    order = dana.locator("#rows tr").evaluate_all("(rows) => rows.map((r) => r.dataset.id)")
    assert order[:2] == [str(second.id), str(first.id)]

    # Dana opens it in another tab: read there, cleared on the inbox tab too.
    transcript = dana.context.new_page()
    transcript.goto(f"{system.url}/agent/conversations/{first.id}/")
    expect(transcript.locator("li.msg.customer")).to_have_count(2)
    expect(row(dana, first).locator(".unread-badge")).to_be_hidden()
    expect(dana.locator("#tab-mine .unread")).to_have_text("1 unread")  # Bob's, assigned to Dana, unread
    # On every workspace page: Bob's unread message and his wait.
    expect(transcript).to_have_title(re.compile(r"^\(2\) .* · Agent workspace$"))
    expect(dana).to_have_title("(2) Inbox · Agent workspace")
    # Eli has read nothing: his count of Alice's messages stays.
    eli.goto(system.url + "/agent/?view=all")
    expect(row(eli, first).locator(".unread-badge")).to_have_text("2")
    # Clicking the handoff's notification opens that conversation.
    dana.evaluate("() => window.__notifications.find((n) => n.title.includes('asks for a person')).onclick()")
    expect(dana).to_have_url(f"{system.url}/agent/conversations/{second.id}/")
    for ctx in {p.context for p in (dana, eli, alice, bob)}:
        ctx.close()


def test_close_asks_first_and_the_other_agent_cannot_close(
    browser: Any, system: LiveSystem, agent_user: User, second_agent: User
) -> None:
    conversation = Conversation.objects.create(customer=Customer.objects.create(display_name="Carol"))
    add_messages(conversation, ("customer", "Help with my bill"), ("bot", "Sure."))
    path = f"/agent/conversations/{conversation.id}/"
    dana = agent_page(browser, system, agent_user, path)
    eli = agent_page(browser, system, second_agent, path)
    dana.click("#takeover")
    expect(dana.locator("#status")).to_have_text("With an agent · Dana")
    expect(dana.locator("#assignee")).to_have_value(str(agent_user.id))  # a takeover assigns

    # Eli's controls follow live, with the reason.
    expect(eli.locator("#held-reason")).to_have_text("Dana holds this conversation.")
    for control in ("#close", "#hand-back", "#takeover", "#assignee", "#take"):
        expect(eli.locator(control)).to_be_disabled()
    expect(eli.locator("#assignee")).to_have_value(str(agent_user.id))

    # Close asks first: Cancel keeps it open, confirming closes it.
    dana.click("#close")
    expect(dana.locator("#close-dialog")).to_be_visible()
    dana.click("#close-cancel")
    expect(dana.locator("#close-dialog")).to_be_hidden()
    assert Conversation.objects.get(id=conversation.id).status == "agent"
    dana.click("#close")
    dana.click("#close-confirm")
    expect(dana.locator("#status")).to_have_text("Closed")
    expect(eli.locator("#status")).to_have_text("Closed")
    assert Conversation.objects.get(id=conversation.id).status == "closed"
    for page in (dana, eli):
        page.context.close()


def test_an_empty_selection_exports_the_filtered_list_and_bulk_close_asks(
    browser: Any, system: LiveSystem, agent_user: User, second_agent: User, tmp_path: Path
) -> None:
    made = []
    for i, name in enumerate(["Ann", "Ben", "Cat", "Dan"]):
        conversation = Conversation.objects.create(
            customer=Customer.objects.create(display_name=name), assignee=agent_user if i % 2 else None
        )
        add_messages(conversation, ("customer", f"question {i}"))
        made.append(conversation)
    Conversation.objects.filter(id=made[3].id).update(status="closed")
    Conversation.objects.filter(id=made[2].id).update(status="waiting")  # unassigned, but not with the bot
    dana = agent_page(browser, system, agent_user, "/agent/?view=unassigned&status=bot")
    expect(dana.locator("#selection")).to_have_text("Nothing selected: exports the 1 conversation this view shows")
    shown = dana.locator("#rows tr[data-id]").evaluate_all("(rows) => rows.map((r) => r.dataset.id)")
    assert shown == [str(made[0].id)]
    with dana.expect_download() as download:
        dana.click("#export-jsonl")
    target = tmp_path / "export.jsonl"
    download.value.save_as(target)
    assert [json.loads(line)["id"] for line in target.read_text().splitlines()] == shown

    dana.goto(system.url + "/agent/?view=all")
    every = dana.locator("#rows tr[data-id]").evaluate_all("(rows) => rows.map((r) => r.dataset.id)")
    assert len(every) == 4
    with dana.expect_download() as download:
        dana.click("#export-csv")
    download.value.save_as(tmp_path / "export.csv")
    assert all(i in (tmp_path / "export.csv").read_text() for i in every)

    # Ticking rows: the bulk close asks first, then says what it did.
    row(dana, made[0]).locator("input[name=id]").check()
    row(dana, made[1]).locator("input[name=id]").check()
    expect(dana.locator("#selection")).to_contain_text("2 selected")
    dana.click("#bulk-close")
    expect(dana.locator("#close-dialog .what")).to_have_text("Close 2 conversations?")
    dana.click("#close-cancel")
    assert not Conversation.objects.filter(id__in=[made[0].id, made[1].id], status="closed").exists()
    dana.click("#bulk-close")
    dana.click("#close-confirm")
    expect(dana.locator("#bulk-result")).to_have_text("Closed 2 conversations.")
    assert Conversation.objects.filter(id__in=[made[0].id, made[1].id], status="closed").count() == 2
    dana.context.close()


def test_the_inbox_and_the_transcript_fit_a_phone(browser: Any, system: LiveSystem, agent_user: User) -> None:
    conversation = Conversation.objects.create(customer=Customer.objects.create(display_name="Phone customer"))
    add_messages(conversation, ("customer", "a-very-long-word-" * 12), ("bot", "An answer that wraps nicely."))
    inbox = agent_page(browser, system, agent_user, "/agent/", **PHONE)
    expect(row(inbox, conversation)).to_be_visible()
    fits(inbox)
    transcript = inbox.context.new_page()
    transcript.goto(f"{system.url}/agent/conversations/{conversation.id}/")
    expect(transcript.locator("#agent-connection")).to_have_class("badge online")
    fits(transcript)
    width = transcript.locator("#transcript").evaluate("(el) => el.getBoundingClientRect().width")
    assert width > 300  # the transcript column is the phone's width, not 22 px
    inbox.context.close()
