"""The "Retrain now" button in real Chromium, run by a real Celery worker, followed live on the run page.

The web side is uvicorn (with the fake inference worker: no reply is asked for here); the run is a
message on the ``finetuning`` queue carrying only its id; the worker trains the real SmolLM2 for a
few steps and pushes every stored step through the Redis channel layer to the page's socket.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings

from conversations.transcripts import import_jsonl
from finetuning.models import ModelVersion, TrainingRun
from tests.e2e.browser import signed_in_context

from .shop import transcripts

pytestmark = [pytest.mark.browser, pytest.mark.model, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def celery_worker(fake_system: Any, tmp_path: Path) -> Any:
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("finetuning")  # no stale message from elsewhere
    worker = fake_system.start_celery(
        {
            "ADAPTERS_DIR": str(tmp_path / "adapters"),
            "FINETUNING_CHECKPOINTS_DIR": str(tmp_path / "checkpoints"),
            "FINETUNING_GENERAL_EXAMPLES": "4",
            "FINETUNING_EVAL_MAX_REPLAYS": "2",
            "FINETUNING_EVAL_MAX_NEW_TOKENS": "8",
            "FINETUNING_PROBE_MAX_FACTS": "2",
            "FINETUNING_PROBE_PARAPHRASES": "1",
            "FINETUNING_PROBE_UNRELATED": "4",
            "FINETUNING_THREADS": "2",
        }
    )
    yield worker
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()


def test_retrain_now_runs_on_a_celery_worker_and_the_page_follows_it_live(
    fake_system: Any, celery_worker: Any, browser: Any, admin_user: Any
) -> None:
    report = import_jsonl(json.dumps(record) for record in transcripts("ada")[:10])
    assert report.imported == 10 and not report.errors

    page = signed_in_context(browser, fake_system, admin_user).new_page()
    page.goto(fake_system.url + "/training/")
    page.get_by_role("button", name="Retrain now").click()
    page.wait_for_url(re.compile(r"/training/runs/\d+/$"))
    page.wait_for_selector("body[data-live=socket]")
    page.evaluate(
        """() => { const phase = document.getElementById('phase'); window.__phases = [phase.textContent];
        new MutationObserver(() => window.__phases.push(phase.textContent))
          .observe(phase, { childList: true, characterData: true, subtree: true }); }"""
    )
    page.wait_for_selector("#status.running", timeout=120_000)  # the worker took the message
    page.wait_for_selector("#status.succeeded, #status.failed, #status.cancelled", timeout=300_000)

    run = TrainingRun.objects.select_related("version").get()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.attempts == 1 and run.step == run.total_steps > 0
    pushes = int(page.evaluate("document.body.dataset.pushes"))
    assert pushes > run.total_steps, "each stored step should have reached the page as a push"
    assert page.evaluate("document.getElementById('bar').style.width") == "100%"
    points = page.evaluate("Chart.getChart(document.getElementById('curve')).data.datasets[0].data.length")
    assert points == len(run.loss_history) == run.total_steps
    assert page.text_content("#phase") == f"Succeeded after step {run.total_steps} of {run.total_steps}"
    phases = page.evaluate("window.__phases")
    assert f"Training: step 1 of {run.total_steps}" in phases and "Evaluating…" in phases, phases
    assert f"step {run.total_steps} of {run.total_steps}" in (page.text_content("#numbers") or "")
    assert page.is_hidden("#cancel")
    page.click("#version a")
    page.wait_for_url(f"**/training/versions/{run.version.name}/")
    assert ModelVersion.objects.get(id=run.version.id).status == ModelVersion.Status.CANDIDATE
