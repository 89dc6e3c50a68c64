from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from finetuning import services
from finetuning.models import ModelVersion, TrainingRun
from finetuning.selectors import version_active


def version(name: str, tmp_path: Path) -> ModelVersion:
    folder = tmp_path / name
    folder.mkdir()
    return ModelVersion.objects.create(name=name, base_model="base", adapter_path=str(folder))


def test_promoting_makes_one_version_active(db: Any, tmp_path: Path) -> None:
    first, second = version("v1", tmp_path), version("v2", tmp_path)
    services.version_promote(version=first)
    services.version_promote(version=second)
    assert version_active() == second
    first.refresh_from_db()
    assert first.status == ModelVersion.Status.RETIRED


def test_it_refuses_to_promote_a_version_whose_adapter_is_missing(db: Any) -> None:
    ghost = ModelVersion.objects.create(name="ghost", base_model="base", adapter_path="/nowhere/at/all")
    with pytest.raises(services.LearningLoopError):
        services.version_promote(version=ghost)
    assert version_active() is None


def test_rollback_walks_back_through_the_versions_that_served(db: Any, tmp_path: Path) -> None:
    first, second, third = (version(n, tmp_path) for n in ("v1", "v2", "v3"))
    for each in (first, second, third):
        services.version_promote(version=each)
    assert services.version_rollback() == second
    assert version_active() == second
    assert services.version_rollback() == first
    assert services.version_rollback() is None
    assert version_active() is None
    with pytest.raises(services.NothingToRollBack):
        services.version_rollback()


def test_promoting_after_a_rollback_starts_from_the_version_then_serving(db: Any, tmp_path: Path) -> None:
    first, second, third = (version(n, tmp_path) for n in ("v1", "v2", "v3"))
    services.version_promote(version=first)
    services.version_promote(version=second)
    services.version_rollback()
    services.version_promote(version=third)
    assert services.version_rollback() == first


def test_a_new_bot_reply_records_the_version_in_service(customer: Any, tmp_path: Path) -> None:
    from conversations import services as chat

    conversation = chat.conversation_start(customer=customer)
    services.version_promote(version=version("v1", tmp_path))
    result = chat.message_send(conversation=conversation, text="Hello")
    assert result.bot_message is not None
    assert result.bot_message.model_version == version_active()


def test_only_one_run_at_a_time(db: Any) -> None:
    run = services.run_start(enqueue=False)
    with pytest.raises(services.RunAlreadyActive) as raised:
        services.run_start(enqueue=False)
    assert raised.value.run == run


def test_the_lease_keeps_a_second_worker_out(db: Any) -> None:
    run = services.run_start(enqueue=False)
    assert services.run_claim(run_id=run.id, owner="worker-a") is not None
    with pytest.raises(services.LeaseHeld):
        services.run_claim(run_id=run.id, owner="worker-b")
    run.refresh_from_db()
    assert (run.lease_owner, run.attempts) == ("worker-a", 1)


def test_an_expired_lease_passes_to_the_next_worker(db: Any) -> None:
    run = services.run_start(enqueue=False)
    services.run_claim(run_id=run.id, owner="worker-a")
    TrainingRun.objects.filter(id=run.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert services.run_claim(run_id=run.id, owner="worker-b") is not None
    assert services.runs_resume_stale() == []


def test_a_redelivered_message_for_a_finished_run_does_nothing(db: Any) -> None:
    run = services.run_start(enqueue=False)
    TrainingRun.objects.filter(id=run.id).update(status=TrainingRun.Status.SUCCEEDED)
    assert services.run_execute(run_id=run.id, owner="worker-b") is None


def test_a_worker_that_lost_its_lease_cannot_write(db: Any) -> None:
    run = services.run_start(enqueue=False)
    services.run_claim(run_id=run.id, owner="worker-a")
    TrainingRun.objects.filter(id=run.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    services.run_claim(run_id=run.id, owner="worker-b")
    with pytest.raises(services.LeaseLost):
        services._guarded(run, "worker-a", step=5)


def test_cancelling_a_queued_run_stops_it_at_once(db: Any) -> None:
    run = services.run_cancel(run=services.run_start(enqueue=False))
    assert run.status == TrainingRun.Status.CANCELLED
    assert services.run_execute(run_id=run.id) is None


def test_a_run_that_keeps_dying_is_failed_clearly(db: Any) -> None:
    run = services.run_start(enqueue=False)
    TrainingRun.objects.filter(id=run.id).update(attempts=services.MAX_ATTEMPTS)
    run = services.run_execute(run_id=run.id, owner="worker-z")
    assert run is not None and run.status == TrainingRun.Status.FAILED
    assert "gave up" in run.error


def test_starting_a_run_publishes_its_id_after_the_commit(db: Any, django_capture_on_commit_callbacks: Any) -> None:
    from unittest import mock

    with mock.patch("finetuning.tasks.training_run.delay") as delay:
        with django_capture_on_commit_callbacks(execute=True):
            run = services.run_start()
    delay.assert_called_once_with(run.id)


def test_a_starting_worker_requeues_runs_whose_lease_expired(db: Any) -> None:
    from unittest import mock

    run = services.run_start(enqueue=False)
    services.run_claim(run_id=run.id, owner="worker-a")
    TrainingRun.objects.filter(id=run.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    with mock.patch("finetuning.tasks.training_run.delay") as delay:
        assert services.runs_resume_stale() == [run.id]
    delay.assert_called_once_with(run.id)
