from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.test import Client

from finetuning import services
from finetuning.models import DatasetSnapshot, Example, ModelVersion, Promotion, TrainingRun
from finetuning.selectors import version_active

from .conftest import chat, rate

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def staff(agent: Any) -> Client:
    client = Client(enforce_csrf_checks=False)
    client.force_login(agent)
    return client


@pytest.fixture
def candidate(db: Any, tmp_path: Path) -> ModelVersion:
    (tmp_path / "v1").mkdir()
    metrics = {
        "compared_with": "base model",
        "heldout_loss": {"candidate": 1.2, "active": 2.5},
        "replay_f1": {"candidate": 0.7, "active": 0.1},
        "replay_similarity": {"candidate": 0.9, "active": 0.4},
        "unrelated_leaks": 0,
        "checks": {"replay_f1_no_worse": True},
        "replays": [
            {
                "question": "Gift wrap?",
                "correction": "It costs $4.50.",
                "candidate": "$4.50 per item.",
                "active": "It is free.",
                "candidate_f1": 0.5,
                "active_f1": 0.0,
            }
        ],
        "unrelated": [{"question": "Hi!", "candidate": "Hello!", "active": "Hi!", "leaked": []}],
    }
    return ModelVersion.objects.create(
        name="run-1", base_model="base", adapter_path=str(tmp_path / "v1"), metrics=metrics
    )


def test_the_pages_are_for_staff_only(client: Client, customer: Any) -> None:
    response = client.get("/training/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_user("plain", password="x"))
    assert client.get("/training/").status_code == 302
    assert client.post("/training/runs/new").status_code == 302
    assert not TrainingRun.objects.exists()


def test_retrain_now_queues_a_run_after_the_commit(staff: Client, django_capture_on_commit_callbacks: Any) -> None:
    with mock.patch("finetuning.tasks.training_run.delay") as delay, django_capture_on_commit_callbacks(execute=True):
        response = staff.post("/training/runs/new")
    run = TrainingRun.objects.get()
    assert response["Location"] == f"/training/runs/{run.id}/"
    delay.assert_called_once_with(run.id)


def test_retrain_now_while_a_run_is_active_shows_that_run(staff: Client) -> None:
    busy = services.run_start()
    response = staff.post("/training/runs/new")
    assert response["Location"] == f"/training/runs/{busy.id}/"
    assert TrainingRun.objects.count() == 1


def test_the_run_page_polls_its_progress(staff: Client) -> None:
    run = services.run_start()
    TrainingRun.objects.filter(id=run.id).update(
        status="running",
        step=3,
        total_steps=12,
        loss_history=[[1, 2.0], [2, 1.5], [3, 1.1]],
        tokens_per_s=150,
        eta_s=40,
    )
    page = staff.get(f"/training/runs/{run.id}/").content.decode()
    assert 'id="curve"' in page and f"/training/runs/{run.id}.json" in page
    status = staff.get(f"/training/runs/{run.id}.json").json()
    assert (status["step"], status["total_steps"], status["progress"]) == (3, 12, 0.25)
    assert status["loss_history"][-1] == [3, 1.1] and status["finished"] is False


def test_cancel_from_the_run_page(staff: Client) -> None:
    run = services.run_start()
    staff.post(f"/training/runs/{run.id}/cancel")
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED


def test_promote_and_roll_back_need_a_csrf_token(agent: Any, candidate: ModelVersion) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(agent)
    assert client.post(f"/training/versions/{candidate.name}/promote").status_code == 403
    assert version_active() is None


def test_promote_then_roll_back_from_the_pages(staff: Client, candidate: ModelVersion) -> None:
    staff.post(f"/training/versions/{candidate.name}/promote", {"expected": "base"})
    assert version_active() == candidate
    staff.post("/training/rollback", {"expected": candidate.name})
    assert version_active() is None


@pytest.fixture
def refused(candidate: ModelVersion) -> ModelVersion:
    candidate.metrics = {**candidate.metrics, "checks": {"replay_f1_no_worse": False}}
    candidate.save()
    return candidate


@pytest.fixture
def admin(admin_user: Any) -> Client:
    client = Client(enforce_csrf_checks=False)
    client.force_login(admin_user)
    return client


def test_the_version_page_shows_the_refusal_and_the_forced_path_to_an_admin(
    admin: Client, refused: ModelVersion
) -> None:
    page = admin.get(f"/training/versions/{refused.name}/").content.decode()
    assert "Promotion refused:" in page and "replay_f1_no_worse" in page
    assert 'name="force" value="yes"' in page and '<textarea id="reason" name="reason"' in page and "required" in page
    assert ">Promote</button>" not in page


def test_an_agent_sees_the_refusal_without_the_forced_path(staff: Client, refused: ModelVersion) -> None:
    page = staff.get(f"/training/versions/{refused.name}/").content.decode()
    assert "Promotion refused:" in page and 'name="force"' not in page and "Only an admin" in page


def test_a_refused_promote_from_the_page_says_why_and_changes_nothing(admin: Client, refused: ModelVersion) -> None:
    response = admin.post(f"/training/versions/{refused.name}/promote", {"expected": "base"}, follow=True)
    assert "did not pass its checks (replay_f1_no_worse)" in response.content.decode()
    assert version_active() is None


def test_an_admin_forces_a_refused_version_from_the_page(admin: Client, refused: ModelVersion) -> None:
    admin.post(f"/training/versions/{refused.name}/promote", {"expected": "base", "force": "yes", "reason": "urgent"})
    assert version_active() == refused
    assert Promotion.objects.get().reason == "urgent"


def test_the_version_page_shows_each_checks_count_and_warns_when_it_is_too_few(
    staff: Client, candidate: ModelVersion
) -> None:
    candidate.metrics |= {
        "checks": {"replay_f1_no_worse": False, "no_taught_facts_in_unrelated": True},
        "not_enough_data": ["replay_f1_no_worse"],
        "check_examples": {"replay_f1_no_worse": 1, "no_taught_facts_in_unrelated": 40},
        "fact_probes": 34,
        "facts_probed": 17,
        "recall": {"candidate": 20, "active": 1},
        "wrong_facts": {"candidate": 3, "active": 0},
        "unrelated_prompts": 40,
    }
    candidate.save()
    page = staff.get(f"/training/versions/{candidate.name}/").content.decode()
    assert "⚠ replay_f1_no_worse (n = 1): not enough data, fewer than 5 examples" in page
    assert "✔ no_taught_facts_in_unrelated (n = 40)" in page
    assert "20 of 34" in page and "3 of 34" in page and "(40 prompts)" in page
    assert "Promotion refused:" in page


def test_the_pages_send_the_version_serving_when_they_were_drawn(staff: Client, candidate: ModelVersion) -> None:
    assert 'name="expected" value="base"' in staff.get(f"/training/versions/{candidate.name}/").content.decode()
    staff.post(f"/training/versions/{candidate.name}/promote", {"expected": "base"})
    assert f'name="expected" value="{candidate.name}"' in staff.get("/training/").content.decode()


def test_a_double_clicked_rollback_goes_back_one_version_only(
    staff: Client, candidate: ModelVersion, tmp_path: Path
) -> None:
    (tmp_path / "v2").mkdir()
    second = ModelVersion.objects.create(
        name="run-2", base_model="base", adapter_path=str(tmp_path / "v2"), metrics=candidate.metrics
    )
    staff.post(f"/training/versions/{candidate.name}/promote", {"expected": "base"})
    staff.post(f"/training/versions/{second.name}/promote", {"expected": candidate.name})
    staff.post("/training/rollback", {"expected": second.name})
    response = staff.post("/training/rollback", {"expected": second.name}, follow=True)
    assert version_active() == candidate
    assert "it changed since the page was drawn" in response.content.decode()


def test_the_version_page_shows_the_report_and_live_results(
    staff: Client, customer: Any, candidate: ModelVersion
) -> None:
    _, reply, _, _ = chat(
        customer, [("customer", "Hi"), ("bot", "Hello from v1"), ("customer", "human"), ("agent", "Hi")]
    )
    reply.model_version = candidate
    reply.save()
    rate(reply, positive=False)
    page = staff.get(f"/training/versions/{candidate.name}/").content.decode()
    assert "Hello from v1" in page and "$4.50 per item." in page and "It is free." in page
    assert "1 replies in 1 conversations" in page and "👎 1" in page and "1 handed to a person" in page


def test_the_dataset_page_shows_examples_with_their_lineage(staff: Client) -> None:
    snapshot = DatasetSnapshot.objects.create(
        content_hash="abc123", counts={"examples": 1, "by_source": {"correction": 1}}
    )
    Example.objects.create(
        snapshot=snapshot,
        source="correction",
        split="train",
        chat=[{"role": "user", "content": "Gift wrap?"}],
        prompt="p",
        completion="c",
        reply="It costs $4.50.",
        rejected="Free.",
        conversation_id="c0ffee00",
        message_ids=[7, 8],
    )
    page = staff.get(f"/training/datasets/{snapshot.id}/").content.decode()
    assert "It costs $4.50." in page and "rejected: Free." in page and "messages 7, 8" in page


def test_the_version_page_shows_the_grounded_figures_beside_the_adapter_alone(
    staff: Client, candidate: ModelVersion
) -> None:
    row = {"question": "What's the price to wrap a present?", "fact": "Gift wrapping costs $4.50 per item."}
    candidate.metrics |= {
        "retrieval": "on",
        "grounded": {
            "fact_probes": 20,
            "recall": {"candidate": 18, "active": 17},
            "wrong_facts": {"candidate": 1, "active": 2},
            "grounded": {"probes": 18, "unrelated": 0},
            "led": {"probes": 16, "unrelated": 0},
            "unrelated_prompts": 40,
            "unrelated_leaks": {"candidate": 0, "active": 0},
            "probes": [row | {"candidate": "Gift wrapping costs $4.50 per item.", "candidate_recalled": True}],
        },
    }
    candidate.save()
    page = staff.get(f"/training/versions/{candidate.name}/").content.decode()
    assert "18 of 20 questions grounded, 16 led by an approved answer" in page
    assert "18 of 20" in page and "17 of 20" in page and "(40 prompts, 0 grounded)" in page
    assert "Taught facts in new words, with the approved knowledge" in page
    assert "once grounded on the approved knowledge as the worker grounds them" in page
