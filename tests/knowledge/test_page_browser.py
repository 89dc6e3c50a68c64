"""The knowledge page in real headless Chromium against uvicorn: an agent approves a suggestion
and retires another through the page (the confirmation dialog included, cancelled once first),
by mouse and by keyboard, and the page has no horizontal scroll on a 390 px phone."""

from __future__ import annotations

from typing import Any

import pytest

from conversations.knowledge import services
from conversations.knowledge.models import KnowledgeEntry
from tests.e2e.browser import signed_in_context
from tests.e2e.live import LiveSystem

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LONG = "Wrapping " + "really-long-unbroken-word" * 8


def no_horizontal_scroll(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth"))


def test_an_agent_approves_one_suggestion_and_retires_another(
    fake_system: LiveSystem, browser: Any, agent_user: Any
) -> None:
    wrapping = services.entry_create(question="How much is gift wrapping?", answer="Gift wrapping costs $4.50.")
    stale = services.entry_create(question="Do you open on Sundays?", answer="We open on Sundays 10 to 4.")
    context = signed_in_context(browser, fake_system, agent_user)
    page = context.new_page()
    page.goto(fake_system.url + "/agent/knowledge/")
    assert page.locator(".tab.current .count").inner_text() == "2"

    page.locator(f"#entry-{wrapping.id} button.approve").click()
    page.wait_for_selector(".flash:has-text('Approved 1 entry')")
    assert KnowledgeEntry.objects.get(id=wrapping.id).status == "approved"
    assert page.locator('.tab[data-tab="approved"] .count').inner_text() == "1"

    # Retire asks first: cancelling leaves the entry as it was.
    page.locator(f"#entry-{stale.id} button.retire").click()
    dialog = page.locator("#retire-dialog")
    dialog.wait_for(state="visible")
    assert "Do you open on Sundays?" in dialog.inner_text()
    page.click("#retire-cancel")
    dialog.wait_for(state="hidden")
    assert KnowledgeEntry.objects.get(id=stale.id).status == "suggested"

    # With the keyboard this time: focus the button, Enter, then confirm in the dialog.
    page.locator(f"#entry-{stale.id} button.retire").focus()
    page.keyboard.press("Enter")
    dialog.wait_for(state="visible")
    page.locator("#retire-confirm").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector(".flash:has-text('Retired entry')")
    assert KnowledgeEntry.objects.get(id=stale.id).status == "retired"
    assert page.locator('.tab[data-tab="retired"] .count').inner_text() == "1"
    context.close()


def test_the_page_fits_a_phone_without_horizontal_scroll(
    fake_system: LiveSystem, browser: Any, agent_user: Any
) -> None:
    services.entry_create(question=LONG, answer=LONG, alternatives=[LONG])
    conflicted = services.entry_create(question="Is delivery free?", answer="Over $50.")
    KnowledgeEntry.objects.filter(id=conflicted.id).update(conflict=True)
    context = signed_in_context(browser, fake_system, agent_user)
    page = context.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    for tab in ("suggested", "conflicts"):
        page.goto(f"{fake_system.url}/agent/knowledge/?tab={tab}")
        page.locator("details.edit summary").first.click()  # the open edit form must fit too
        page.locator("details.create summary").click()
        assert no_horizontal_scroll(page), tab
    # A refused import lists its lines on the page, and still fits.
    page.set_input_files("#import-file", {"name": "faq.jsonl", "mimeType": "application/json", "buffer": b"{bad\n"})
    page.click(".import-form button[type=submit]")
    page.wait_for_selector("#problem:has-text('Nothing was imported.')")
    assert "line 1: not JSON" in page.locator(".import-problems").inner_text()
    assert no_horizontal_scroll(page)
    context.close()


def test_the_page_says_live_when_a_colleague_changes_an_entry(
    fake_system: LiveSystem, browser: Any, agent_user: Any
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    entry = services.entry_create(question="How much is gift wrapping?", answer="Gift wrapping costs $4.50.")
    page = signed_in_context(browser, fake_system, agent_user).new_page()
    page.goto(fake_system.url + "/agent/knowledge/")
    page.wait_for_selector("#agent-connection.online")
    assert page.locator("#knowledge-changed").is_hidden()
    with ThreadPoolExecutor(1) as pool:  # off this thread, where Playwright's event loop runs
        pool.submit(services.entries_approve, ids=[entry.id], by=None).result()
    page.wait_for_selector("#knowledge-changed:visible")
    notice = page.locator("#knowledge-changed").inner_text()
    assert "1 entry has changed since this page was drawn" in notice and "How much is gift wrapping?" in notice
    page.get_by_role("link", name="Show the latest").click()
    page.wait_for_selector('.tab[data-tab="approved"] .count:text("1")')


def test_a_retire_confirmed_right_after_another_was_cancelled_still_retires(
    fake_system: LiveSystem, browser: Any, agent_user: Any
) -> None:
    """The dialog's "close" is a queued event: Cancel's can arrive after the dialog was opened again
    for the next entry (a quick hand, or a busy machine: seen in CI). Cancel, reopen at once, let
    the late event in, confirm: the entry confirmed is the one retired."""
    first = services.entry_create(question="Do you open on Sundays?", answer="We open on Sundays 10 to 4.")
    second = services.entry_create(question="Do you ship abroad?", answer="We ship to the EU.")
    context = signed_in_context(browser, fake_system, agent_user)
    page = context.new_page()
    page.goto(fake_system.url + "/agent/knowledge/")
    page.evaluate(
        """async ([first, second]) => {
          document.querySelector(`#entry-${first} button.retire`).click();
          document.getElementById("retire-cancel").click();
          document.querySelector(`#entry-${second} button.retire`).click();
          await new Promise((resolve) => setTimeout(resolve, 0));  // Cancel's "close" arrives now
          document.getElementById("retire-confirm").click();
        }""",
        [first.id, second.id],
    )
    page.wait_for_selector(".flash:has-text('Retired entry')")
    assert KnowledgeEntry.objects.get(id=second.id).status == "retired"
    assert KnowledgeEntry.objects.get(id=first.id).status == "suggested"
    context.close()
