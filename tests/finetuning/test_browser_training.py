"""The training pages in real Chromium, as an admin meets them: a dataset build followed live by a
real Celery worker until its link appears, the run page's Chart.js loss curve with its axes and
values, the promote and rollback confirmations, and a phone's width.

uvicorn runs with the fake inference worker; the Celery broker is a Redis database of these tests'
own, so no other Celery worker on this Redis can take their messages (queue names carry no prefix)."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connections

from finetuning import events, services
from finetuning.models import DatasetBuild, DatasetSnapshot, Example, ModelVersion, TrainingRun
from tests.e2e.browser import signed_in_context
from tests.e2e.live import LiveSystem

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BROKER = re.sub(r"/\d*$", "", settings.REDIS_URL.rstrip("/")) + "/11"
EVALUATED = {"checks": {"replay_f1_no_worse": True}}
NO_OVERFLOW = "() => document.documentElement.scrollWidth <= document.documentElement.clientWidth"


@pytest.fixture(scope="module")
def system(browser: Any, django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveSystem]:
    live = LiveSystem(fake=True, env={"CELERY_BROKER_URL": BROKER})
    yield live
    live.stop()


@pytest.fixture
def celery_worker(system: LiveSystem, tmp_path: Path) -> Iterator[Any]:
    """Started by the test when it wants the queued build taken; stopped after it."""
    redis.Redis.from_url(BROKER).delete("finetuning")
    workers: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        env = {
            "FINETUNING_CACHE_DIR": str(tmp_path / "cache"),
            "FINETUNING_GENERAL_EXAMPLES": "3",
            "FINETUNING_THREADS": "2",
        }
        workers.append(system.start_celery(env))

    yield start
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()


def version(name: str, tmp_path: Path) -> ModelVersion:
    (tmp_path / name).mkdir()
    return ModelVersion.objects.create(
        name=name, base_model="base", adapter_path=str(tmp_path / name), metrics=EVALUATED
    )


def test_a_dataset_build_shows_its_progress_and_its_link_without_a_reload(
    system: LiveSystem, celery_worker: Any, browser: Any, admin_user: Any
) -> None:
    page = signed_in_context(browser, system, admin_user).new_page()
    page.goto(system.url + "/training/")
    assert page.is_hidden("#build")
    page.get_by_role("button", name="Build a dataset to browse").click()
    page.wait_for_url(system.url + "/training/")
    assert page.text_content("#build-status") == "queued"
    assert page.is_visible("#build-progress") and page.is_disabled("#build-start")
    # Every state the panel shows from here on, and a mark a reload would lose.
    page.evaluate(
        """() => { window.__seen = []; window.__same_page = true;
        const status = document.getElementById('build-status');
        new MutationObserver(() => window.__seen.push(status.textContent))
          .observe(status, { childList: true, characterData: true, subtree: true }); }"""
    )

    celery_worker()
    page.wait_for_function("() => document.getElementById('build-status').textContent === 'ready'", timeout=240_000)

    build = DatasetBuild.objects.select_related("snapshot").get()
    assert build.status == DatasetBuild.Status.READY, build.error
    assert build.snapshot is not None
    assert page.evaluate("window.__same_page") is True
    assert "building" in page.evaluate("window.__seen")
    link = page.locator("#build-result a")
    assert link.get_attribute("href") == f"/training/datasets/{build.snapshot.id}/"
    assert link.text_content() == build.snapshot.content_hash[:10]
    assert f"{build.snapshot.counts['examples']} examples" in (page.text_content("#build-result") or "")
    assert page.is_hidden("#build-progress") and page.is_enabled("#build-start")
    assert page.locator(f"#datasets tr[data-snapshot='{build.snapshot.id}'] a").count() == 1
    link.click()
    page.wait_for_url(f"**/training/datasets/{build.snapshot.id}/")


def push(run_id: int) -> None:
    """What the training worker does after each stored step, from a thread of its own: Playwright's
    event loop runs in this one, where async_to_sync refuses to run."""

    def publish() -> None:
        try:
            events.run_changed(run_id)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(publish).result()


def chart_state(page: Any) -> dict[str, Any]:
    return dict(
        page.evaluate(
            """() => { const chart = Chart.getChart(document.getElementById('curve'));
            return { id: chart.id, x: chart.options.scales.x.title.text, y: chart.options.scales.y.title.text,
                     xShown: chart.options.scales.x.title.display && chart.options.scales.y.title.display,
                     max: chart.scales.x.max, points: chart.data.datasets[0].data.map((p) => [p.x, p.y]) }; }"""
        )
    )


def test_the_loss_curve_has_axes_and_values_and_takes_new_steps_in_place(
    system: LiveSystem, browser: Any, admin_user: Any
) -> None:
    run = services.run_start()
    TrainingRun.objects.filter(id=run.id).update(
        status="running", phase="training", step=2, total_steps=12, loss_history=[[1, 2.5], [2, 2.0]]
    )
    page = signed_in_context(browser, system, admin_user).new_page()
    page.goto(f"{system.url}/training/runs/{run.id}/")
    page.wait_for_selector("body[data-live='socket']")
    first = chart_state(page)
    assert (first["x"], first["y"], first["xShown"]) == ("Step (of 12)", "Loss", True)
    assert first["max"] == 12 and first["points"] == [[1, 2.5], [2, 2.0]]
    assert page.text_content("#phase") == "Training: step 2 of 12"
    assert page.text_content("#loss-latest") == "Latest: step 2 of 12, loss 2.000."
    assert "loss 2.000" in (page.get_attribute("#curve", "aria-label") or "")

    TrainingRun.objects.filter(id=run.id).update(step=3, loss_history=[[1, 2.5], [2, 2.0], [3, 1.25]])
    push(run.id)
    page.wait_for_function("() => Chart.getChart(document.getElementById('curve')).data.datasets[0].data.length === 3")
    after = chart_state(page)
    assert after["id"] == first["id"], "the chart is updated, not drawn anew"
    assert after["points"][-1] == [3, 1.25]
    assert page.locator("#loss-table tbody tr").all_text_contents() == ["31.250", "22.000", "12.500"]
    assert page.text_content("#phase") == "Training: step 3 of 12"

    TrainingRun.objects.filter(id=run.id).update(phase="evaluating")
    push(run.id)
    page.wait_for_function("() => document.getElementById('phase').textContent === 'Evaluating…'")


def test_a_building_run_says_so_instead_of_step_0_of_0_and_the_overview_follows_it(
    system: LiveSystem, browser: Any, admin_user: Any
) -> None:
    run = services.run_start()
    TrainingRun.objects.filter(id=run.id).update(status="running", phase="building")
    page = signed_in_context(browser, system, admin_user).new_page()
    page.goto(f"{system.url}/training/runs/{run.id}/")
    page.wait_for_selector("body[data-live='socket']")
    assert page.text_content("#phase") == "Building the dataset…"
    assert "step 0 of 0" not in (page.text_content("main") or "")

    page.goto(system.url + "/training/")
    cell = page.locator(f"tr[data-run='{run.id}'] td.phase")
    assert cell.text_content() == "Building the dataset…"
    TrainingRun.objects.filter(id=run.id).update(phase="training", step=3, total_steps=10)
    page.wait_for_function(
        f"() => document.querySelector(\"tr[data-run='{run.id}'] td.phase\").textContent === 'Training: step 3 of 10'"
    )
    TrainingRun.objects.filter(id=run.id).update(status="failed", phase="", error="boom")
    page.wait_for_function(f"() => document.querySelector(\"tr[data-run='{run.id}'] .badge\").textContent === 'failed'")
    assert cell.text_content() == "Failed after step 3 of 10"


def test_promote_asks_first_cancel_changes_nothing_and_confirm_promotes(
    system: LiveSystem, browser: Any, admin_user: Any, tmp_path: Path
) -> None:
    candidate = version("run-1", tmp_path)
    page = signed_in_context(browser, system, admin_user).new_page()
    page.goto(system.url + "/training/")
    assert page.locator("#rollback").count() == 0
    assert "nothing served before it" in (page.text_content("#no-rollback") or "")

    page.goto(f"{system.url}/training/versions/{candidate.name}/")
    page.get_by_role("button", name="Promote", exact=True).click()
    dialog = page.locator("dialog#confirm")
    assert dialog.is_visible()
    assert (
        dialog.locator("#confirm-text").text_content() == "run-1 will answer new messages in place of the base model."
    )
    dialog.get_by_role("button", name="Cancel").click()
    page.wait_for_function("() => !document.getElementById('confirm').open")
    assert page.url.endswith(f"/training/versions/{candidate.name}/")
    candidate.refresh_from_db()
    assert candidate.status == ModelVersion.Status.CANDIDATE

    page.get_by_role("button", name="Promote", exact=True).focus()
    page.keyboard.press("Enter")
    assert dialog.is_visible()
    assert page.evaluate("document.activeElement.id") == "confirm-cancel"  # the safe choice has the focus
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.getElementById('confirm').open")
    candidate.refresh_from_db()
    assert candidate.status == ModelVersion.Status.CANDIDATE

    page.get_by_role("button", name="Promote", exact=True).click()
    dialog.get_by_role("button", name="Promote run-1").click()
    page.wait_for_selector("text=run-1 now answers new messages.")
    candidate.refresh_from_db()
    assert candidate.status == ModelVersion.Status.ACTIVE

    page.get_by_role("button", name="Roll back to the base model").click()
    assert (
        dialog.locator("#confirm-text").text_content() == "The base model will answer new messages in place of run-1."
    )
    dialog.get_by_role("button", name="Roll back to the base model").click()
    page.wait_for_selector("text=Rolled back: the base model is serving.")
    candidate.refresh_from_db()
    assert candidate.status == ModelVersion.Status.RETIRED
    assert page.locator("#rollback").count() == 0


def test_the_training_pages_fit_a_phone(system: LiveSystem, browser: Any, admin_user: Any, tmp_path: Path) -> None:
    candidate = version("run-1", tmp_path)
    services.version_promote(version=candidate)
    run = services.run_start()
    TrainingRun.objects.filter(id=run.id).update(
        status="running", phase="training", step=2, total_steps=40, loss_history=[[1, 2.5], [2, 2.0]]
    )
    DatasetBuild.objects.create(status=DatasetBuild.Status.FAILED, error="OSError: " + "no-space-left-" * 12)
    snapshot = DatasetSnapshot.objects.create(content_hash="c0ffee" * 10 + "abcd", counts={"examples": 1})
    Example.objects.create(
        snapshot=snapshot,
        source="correction",
        split="train",
        chat=[{"role": "user", "content": "Where is order " + "1234567890" * 8 + "?"}],
        prompt="p",
        completion="c",
        reply="It left the warehouse today, tracking " + "ZX" * 30,
        conversation_id="c0ffee00",
        message_ids=list(range(100, 130)),
    )
    page = signed_in_context(browser, system, admin_user).new_page()
    console: list[str] = []
    # Chromium's own favicon.ico request may 404: the site has none; everything else counts.
    page.on(
        "console",
        lambda m: console.append(m.text) if m.type == "error" and "favicon.ico" not in m.location["url"] else None,
    )
    page.set_viewport_size({"width": 390, "height": 844})
    pages = ["/training/", f"/training/runs/{run.id}/", f"/training/versions/{candidate.name}/"]
    for path in [*pages, f"/training/datasets/{snapshot.id}/"]:
        page.goto(system.url + path)
        assert page.evaluate(NO_OVERFLOW), f"{path} overflows 390 px"
    assert console == [], "no script error, no policy violation on the training pages"
    page.goto(system.url + "/training/")
    page.get_by_role("button", name="Roll back to the base model").click()
    box = page.locator("dialog#confirm").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
