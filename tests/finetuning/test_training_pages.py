"""What the training pages tell an admin: a run's phase in words, rollback only when there is
somewhere to go, confirmations naming what will happen, and a version's report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from finetuning import selectors, services
from finetuning.models import ModelVersion, TrainingRun

EVALUATED = {"checks": {"replay_f1_no_worse": True}}


@pytest.fixture
def staff(agent: Any) -> Client:
    client = Client()
    client.force_login(agent)
    return client


def version(name: str, tmp_path: Path, metrics: dict[str, Any] | None = None) -> ModelVersion:
    (tmp_path / name).mkdir()
    return ModelVersion.objects.create(
        name=name, base_model="base", adapter_path=str(tmp_path / name), metrics=metrics or EVALUATED
    )


def running(**fields: Any) -> TrainingRun:
    run = services.run_start()
    TrainingRun.objects.filter(id=run.id).update(status="running", **fields)
    run.refresh_from_db()
    return run


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"phase": "building"}, "Building the dataset…"),
        ({"phase": "training"}, "Training: starting…"),
        ({"phase": "training", "step": 12, "total_steps": 40}, "Training: step 12 of 40"),
        ({"phase": "evaluating", "step": 40, "total_steps": 40}, "Evaluating…"),
        ({"phase": "training", "step": 3, "total_steps": 40, "cancel_requested": True}, "Cancelling…"),
        ({"phase": ""}, "Starting…"),
    ],
)
def test_a_running_runs_payload_says_its_phase_in_words(db: Any, fields: dict[str, Any], text: str) -> None:
    assert selectors.run_payload(running(**fields))["phase_text"] == text


def test_a_queued_or_finished_runs_payload_says_so(db: Any) -> None:
    run = services.run_start()
    assert selectors.run_payload(run)["phase_text"] == "Queued: waiting for a training worker"
    TrainingRun.objects.filter(id=run.id).update(status="succeeded", step=40, total_steps=40)
    run.refresh_from_db()
    assert selectors.run_payload(run)["phase_text"] == "Succeeded after step 40 of 40"


def test_the_overview_shows_a_building_run_by_its_phase_not_step_0_of_0(staff: Client) -> None:
    running(phase="building")
    page = staff.get("/training/").content.decode()
    assert '<td class="phase">Building the dataset…</td>' in page and "0/0" not in page


def test_the_run_page_says_the_phase_and_loads_its_chart(staff: Client) -> None:
    run = running(phase="evaluating", step=40, total_steps=40)
    page = staff.get(f"/training/runs/{run.id}/").content.decode()
    assert '<p id="phase" aria-live="polite">Evaluating…</p>' in page
    assert "vendor/chartjs/chart.umd.min.js" in page and '<canvas id="curve"' in page
    assert '<table id="loss-table"' in page


def test_rollback_is_not_offered_while_the_base_model_serves_with_nothing_before(staff: Client, tmp_path: Path) -> None:
    version("run-1", tmp_path)
    target = selectors.rollback_target()
    assert not target.possible and target.reason == "the base model is serving and nothing served before it"
    page = staff.get("/training/").content.decode()
    assert 'action="/training/rollback"' not in page and "Roll back to" not in page
    assert "Nothing to roll back to: the base model is serving and nothing served before it." in page


def test_rollback_from_the_first_promoted_version_goes_to_the_base_model(staff: Client, tmp_path: Path) -> None:
    first = version("run-1", tmp_path)
    services.version_promote(version=first)
    target = selectors.rollback_target()
    assert target.possible and target.version is None and target.label == "the base model"
    for url in ("/training/", f"/training/versions/{first.name}/"):
        page = staff.get(url).content.decode()
        assert 'data-confirm-title="Roll back to the base model?"' in page
        assert 'data-confirm="The base model will answer new messages in place of run-1."' in page
        assert ">Roll back to the base model</button>" in page


def test_rollback_names_the_version_that_served_before(staff: Client, tmp_path: Path) -> None:
    first, second = version("run-1", tmp_path), version("run-2", tmp_path)
    services.version_promote(version=first)
    services.version_promote(version=second)
    assert selectors.rollback_target().version == first
    page = staff.get("/training/").content.decode()
    assert 'data-confirm="Run-1 will answer new messages in place of run-2."' in page
    assert ">Roll back to run-1</button>" in page
    services.version_rollback()
    services.version_rollback()
    assert not selectors.rollback_target().possible
    assert "Nothing to roll back to" in staff.get("/training/").content.decode()


def test_the_promote_form_asks_first_naming_what_it_replaces(staff: Client, tmp_path: Path) -> None:
    first, second = version("run-1", tmp_path), version("run-2", tmp_path)
    page = staff.get(f"/training/versions/{first.name}/").content.decode()
    assert 'data-confirm="run-1 will answer new messages in place of the base model."' in page
    assert 'data-confirm-button="Promote run-1"' in page and '<dialog id="confirm"' in page
    services.version_promote(version=first)
    page = staff.get(f"/training/versions/{second.name}/").content.decode()
    assert 'data-confirm="run-2 will answer new messages in place of run-1."' in page


def test_the_forced_promote_asks_first_naming_the_checks_it_overrides(admin_user: Any, tmp_path: Path) -> None:
    refused = version("run-1", tmp_path, {"checks": {"replay_f1_no_worse": False}})
    client = Client()
    client.force_login(admin_user)
    page = client.get(f"/training/versions/{refused.name}/").content.decode()
    assert 'data-confirm-title="Force run-1 past its checks?"' in page
    assert "run-1 did not pass replay_f1_no_worse; it will answer new messages in place of the base model" in page


def test_the_version_page_links_to_its_report(staff: Client, tmp_path: Path) -> None:
    version("run-1", tmp_path)
    page = staff.get("/training/versions/run-1/").content.decode()
    assert '<a id="report" href="/reports/?version=run-1">' in page


def test_the_training_pages_are_for_staff_only(client: Client, db: Any, tmp_path: Path) -> None:
    from django.contrib.auth.models import User

    version("run-1", tmp_path)
    run = services.run_start()
    client.force_login(User.objects.create_user("plain", password="x"))
    for url in (
        "/training/",
        f"/training/runs/{run.id}/",
        f"/training/runs/{run.id}.json",
        "/training/versions/run-1/",
    ):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert client.post("/training/rollback").status_code == 302
    assert client.post("/training/versions/run-1/promote").status_code == 302
    assert selectors.version_active() is None
