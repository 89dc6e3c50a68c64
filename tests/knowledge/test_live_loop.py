"""The knowledge loop with every part real but the model: a customer asks in Chromium, an agent
saves a correction on the transcript page (uvicorn), a real Celery worker turns it into a
suggestion (MiniLM), an admin approves it, and the next customer, in other words, gets the
approved answer from the inference worker (the scripted engine goes on after it)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from io import StringIO
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.management import call_command

from conversations.knowledge.models import KnowledgeEntry
from conversations.models import Message
from tests.e2e.browser import signed_in_context

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ANSWER = "Gift wrapping costs $4.50 per item."


@pytest.fixture
def celery_worker(fake_system: Any) -> Iterator[Any]:
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("finetuning")  # no stale message from elsewhere
    worker = fake_system.start_celery({})
    yield worker
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()


def ask(browser: Any, system: Any, question: str) -> Any:
    """A new customer asks; their page once the reply has finished."""
    page = browser.new_context().new_page()
    page.goto(system.url + "/")
    page.wait_for_selector("#connection.online")
    page.fill("#input", question)
    page.keyboard.press("Enter")
    page.wait_for_selector("li.msg.bot.complete", timeout=60_000)
    return page


def wait_for(condition: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_a_correction_becomes_a_suggestion_on_celery_and_once_approved_answers_the_next_customer(
    fake_system: Any, celery_worker: Any, browser: Any, agent_user: Any
) -> None:
    ask(browser, fake_system, "How much is gift wrapping?")
    reply = Message.objects.filter(role="bot", status="complete").get()

    agent = signed_in_context(browser, fake_system, agent_user).new_page()
    agent.goto(f"{fake_system.url}/agent/conversations/{reply.conversation_id}/")
    form = agent.locator(f"li.msg[data-id='{reply.id}'] form.correct")
    form.locator("textarea").fill(ANSWER)
    form.get_by_role("button", name="Save correction").click()
    entry = wait_for(lambda: KnowledgeEntry.objects.filter(answer=ANSWER).first(), timeout=120)
    assert entry.status == "suggested" and entry.question == "How much is gift wrapping?"
    assert entry.sources.get().correction_id == reply.correction.id

    out = StringIO()
    with ThreadPoolExecutor(1) as pool:  # off this thread, where Playwright's event loop runs
        pool.submit(call_command, "knowledge", "approve", str(entry.id), stdout=out).result()
    assert out.getvalue().startswith("approved 1 entries")
    approved_at = time.monotonic()
    page = ask(browser, fake_system, "What's the price to have my present wrapped?")
    waited = time.monotonic() - approved_at
    text = page.locator("li.msg.bot .body").last.text_content() or ""
    assert text.startswith(ANSWER), text  # the approved words first, the scripted engine's after
    grounded = Message.objects.filter(role="bot").order_by("-id").first()
    assert grounded is not None and grounded.grounding[0]["entry"] == entry.id and grounded.grounding[0]["lead"]
    print(f"approval to a finished grounded reply in the browser: {waited:.2f} s")
