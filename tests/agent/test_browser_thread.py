"""The transcript's thread and side panel in real headless Chromium, against uvicorn and a scripted
worker of this module's own: two agents and a customer. A note written by one agent appears live on
the other's screen and never on the customer's; the customer's request for a person appears as an
activity line on both; a canned reply is inserted with its shortcut from the keyboard; the panel
shows the customer's e-mail and their other conversation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from conversations.knowledge.models import KnowledgeEntry
from conversations.models import CannedReply, Conversation, ConversationNote, Customer, Message
from tests.e2e import browser as browser_pages
from tests.e2e.browser import signed_in_context
from tests.e2e.live import LiveSystem

from .conftest import add_messages

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TIMEOUT_MS = 60_000
SECRET = "Between us: <b>refund</b> already issued twice"


@pytest.fixture(scope="module")
def system(browser: Any, django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveSystem]:
    """A live system of this module's own (its own Redis prefix): the fake worker answers."""
    system = LiveSystem(fake=True, prefix=f"{settings.REDIS_KEY_PREFIX}:thread")
    yield system
    system.stop()


def expect(locator: Any) -> Any:
    from playwright.sync_api import Expect

    patient = Expect()
    patient.set_options(timeout=TIMEOUT_MS)
    return patient(locator)


def agent_page(browser: Any, system: LiveSystem, user: Any, path: str) -> Any:
    return browser_pages.agent_page(signed_in_context(browser, system, user), system, path, timeout_ms=TIMEOUT_MS)


def customer_page(browser: Any, system: LiveSystem) -> Any:
    return browser_pages.customer_page(browser, system, timeout_ms=TIMEOUT_MS)


def ask(customer: Any, text: str) -> Conversation:
    """The customer writes; the bot answers; the conversation, read from the database."""
    customer.fill("#input", text)
    customer.keyboard.press("Enter")
    expect(customer.locator("li.msg.bot.complete")).to_have_count(1)
    return Message.objects.filter(role="customer", text=text).latest("id").conversation


def transcript(browser: Any, system: LiveSystem, user: Any, conversation: Conversation) -> Any:
    page = agent_page(browser, system, user, f"/agent/conversations/{conversation.id}/")
    page.wait_for_selector("#transcript-page[data-watching='1']")
    return page


def wait_for(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        time.sleep(0.05)


def test_a_note_reaches_the_other_agent_live_and_never_the_customer_and_a_handoff_shows_on_both(
    system: LiveSystem, browser: Any, agent_user: Any, second_agent: Any
) -> None:
    customer = customer_page(browser, system)
    conversation = ask(customer, "Where is my parcel?")
    dana = transcript(browser, system, agent_user, conversation)
    eli = transcript(browser, system, second_agent, conversation)

    # The customer asks for a person: an activity line on both agents' screens, in place.
    customer.click("#handoff")
    for page in (dana, eli):
        line = page.locator("#transcript li.activity[data-kind=handoff_requested]")
        expect(line).to_have_count(1)
        expect(line.locator(".text")).to_have_text("Customer asked for a person")

    # Dana writes a note: refused while empty (said beside the field), then added.
    dana.click("#thread-note-add")
    expect(dana.locator("#thread-note-error")).to_have_text("Write the note first.")
    dana.fill("#thread-note-input", SECRET)
    dana.keyboard.press("Control+Enter")
    for page in (dana, eli):
        note = page.locator("#transcript li.note")
        expect(note).to_have_count(1)  # Dana's own screen: from the answer and the frame, drawn once
        expect(note.locator(".body")).to_have_text(SECRET)
        expect(note.locator(".author")).to_have_text("Dana")
        expect(note).to_contain_text("only agents see this")
    assert dana.input_value("#thread-note-input") == ""
    expect(dana.locator("#thread-note-error")).to_be_hidden()
    assert eli.locator("#transcript li.note b").count() == 0  # text, never markup
    wait_for(lambda: ConversationNote.objects.filter(conversation=conversation, author=agent_user).exists())

    # Something the customer does see, after the note: Dana takes over, and they read it.
    dana.click("#takeover")
    expect(customer.locator("li.msg.system")).to_contain_text("Dana joined the conversation.")
    assert "already issued" not in customer.content()
    customer.reload()
    expect(customer.locator("li.msg.system")).to_have_count(1)
    assert "already issued" not in customer.content()

    # A reload of Eli's transcript draws the note and the line from the server, in time order.
    eli.reload()
    kinds = eli.eval_on_selector_all(
        "#transcript > li",
        "(items) => items.map((li) => li.classList.contains('msg') ? li.dataset.role : li.className)",
    )
    # The takeover writes the customer's line and, for the agents, the assignment it makes.
    assert kinds == ["customer", "bot", "activity", "note", "system", "activity"]
    expect(eli.locator("#transcript > li.activity").last).to_contain_text("Dana took this")


def test_a_canned_reply_is_inserted_with_its_shortcut_from_the_keyboard(
    system: LiveSystem, browser: Any, agent_user: Any
) -> None:
    CannedReply.objects.create(shortcut="refund", text="Refunds reach your card within 5 days.")
    CannedReply.objects.create(shortcut="shipping", text="We ship within 2 days.")
    KnowledgeEntry.objects.create(question="How do refunds work?", answer="Ask us.", status="approved")
    customer = customer_page(browser, system)
    conversation = ask(customer, "I want my money back")
    dana = transcript(browser, system, agent_user, conversation)
    dana.click("#takeover")
    expect(dana.locator("#agent-input")).to_be_enabled()

    dana.click("#agent-input")
    dana.keyboard.type("Sure. /ref")
    options = dana.locator("#snippet-list [role=option]")
    expect(options).to_have_count(2)  # the canned reply, then the knowledge entry matching "ref"
    expect(options.first.locator(".label")).to_have_text("/refund")
    expect(options.nth(1)).to_have_attribute("data-kind", "knowledge")
    dana.keyboard.press("ArrowDown")
    expect(options.first).to_have_attribute("aria-selected", "true")
    assert dana.get_attribute("#agent-input", "aria-activedescendant") == "snippet-0"
    dana.keyboard.press("Enter")  # inserts; does not send
    expect(dana.locator("#snippet-list")).to_be_hidden()
    assert dana.input_value("#agent-input") == "Sure. Refunds reach your card within 5 days."
    assert dana.locator("#transcript li.msg.agent").count() == 0

    # Esc closes the list and leaves the text; Enter then sends as always.
    dana.keyboard.type(" /sh")
    expect(options).to_have_count(1)
    dana.keyboard.press("Escape")
    expect(dana.locator("#snippet-list")).to_be_hidden()
    assert dana.input_value("#agent-input").endswith("5 days. /sh")
    dana.keyboard.press("Backspace")
    dana.keyboard.press("Backspace")
    dana.keyboard.press("Backspace")
    dana.keyboard.press("Enter")
    expect(customer.locator("li.msg.agent .body")).to_have_text("Sure. Refunds reach your card within 5 days.")

    # A click inserts too.
    dana.keyboard.type("/ship")
    expect(options).to_have_count(1)
    options.first.click()
    assert dana.input_value("#agent-input") == "We ship within 2 days."


def test_the_panel_shows_the_customers_email_and_other_conversation(
    system: LiveSystem, browser: Any, agent_user: Any
) -> None:
    known = Customer.objects.create(display_name="Carol", email="carol@example.com")
    earlier = Conversation.objects.create(customer=known, status="closed", satisfaction=4)
    add_messages(earlier, ("customer", "My old question"), ("bot", "An old answer"), status="complete")
    current = Conversation.objects.create(customer=known, page_url="https://shop.example.com/cart")
    add_messages(current, ("customer", "Hello again"), ("bot", "Hi!"), status="complete")
    dana = agent_page(browser, system, agent_user, f"/agent/conversations/{current.id}/")
    dana.set_viewport_size({"width": 390, "height": 844})

    panel = dana.locator("#customer-context")
    expect(panel.locator("#customer-name")).to_have_text("Carol")
    expect(panel.locator("#customer-email")).to_have_text("carol@example.com")
    expect(panel.locator("#chat-page-url")).to_have_text("https://shop.example.com/cart")
    expect(panel.locator("#satisfaction-average")).to_contain_text("average 4.0 over 1 conversation")
    other = panel.locator("#other-conversations li")
    expect(other).to_have_count(1)
    expect(other.locator(".last")).to_have_text("An old answer")
    expect(other.locator(".status-badge")).to_have_text("Closed")
    # On a phone the panel's own lines wrap inside it rather than push it wider.
    assert panel.evaluate("(el) => el.scrollWidth <= el.clientWidth")
    other.locator("a").click()
    dana.wait_for_url(f"**/agent/conversations/{earlier.id}/")
    expect(dana.locator("#transcript li.msg.customer .body")).to_have_text("My old question")
    expect(dana.locator("#other-conversations li .last")).to_have_text("Hi!")


def test_the_canned_replies_page_works_on_a_phone_and_asks_before_deleting(
    system: LiveSystem, browser: Any, agent_user: Any
) -> None:
    CannedReply.objects.create(shortcut="refund", text="Refunds reach your card within 5 days. " * 8)
    page = agent_page(browser, system, agent_user, "/agent/canned/")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")

    page.fill("#id_shortcut", "refund")
    page.fill("#id_text", "Another")
    page.click("#canned-form button[type=submit]")
    expect(page.locator("#shortcut-error")).to_have_text(
        "Another canned reply already has this shortcut: pick another."
    )
    page.fill("#id_shortcut", "/Shipping")
    page.click("#canned-form button[type=submit]")
    expect(page.locator("#canned-saved")).to_have_text("Saved /shipping.")
    expect(page.locator("#canned-list tr[data-shortcut]")).to_have_count(2)

    page.click("#canned-list tr[data-shortcut=refund] a:has-text('Delete')")
    expect(page.locator("h1")).to_have_text("Delete /refund?")
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    page.click("#cancel-delete")
    expect(page.locator("#canned-list tr[data-shortcut]")).to_have_count(2)
    page.click("#canned-list tr[data-shortcut=refund] a:has-text('Delete')")
    page.click("#confirm-delete")
    expect(page.locator("#canned-deleted")).to_have_text("Deleted /refund.")
    assert list(CannedReply.objects.values_list("shortcut", flat=True)) == ["shipping"]
