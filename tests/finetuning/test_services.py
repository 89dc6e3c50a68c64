from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from conversations.chat import services as chat_services
from finetuning import pipeline, services, tasks
from finetuning.models import ModelVersion, Promotion, TrainingRun
from finetuning.selectors import version_active

from .conftest import race

EVALUATED = {"checks": {"replay_f1_no_worse": True}}


def version(name: str, tmp_path: Path) -> ModelVersion:
    folder = tmp_path / name
    folder.mkdir()
    return ModelVersion.objects.create(name=name, base_model="base", adapter_path=str(folder), metrics=EVALUATED)


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
    conversation = chat_services.conversation_start(customer=customer)
    services.version_promote(version=version("v1", tmp_path))
    result = chat_services.message_send(conversation=conversation, text="Hello")
    assert result.bot_message is not None
    assert result.bot_message.model_version == version_active()


def test_only_one_run_at_a_time(db: Any) -> None:
    run = services.run_start()
    with pytest.raises(services.RunAlreadyActive) as raised:
        services.run_start()
    assert raised.value.run == run


def test_the_lease_keeps_a_second_worker_out(db: Any) -> None:
    run = services.run_start()
    assert services.run_claim(run_id=run.id, owner="worker-a") is not None
    with pytest.raises(services.LeaseHeld):
        services.run_claim(run_id=run.id, owner="worker-b")
    run.refresh_from_db()
    assert (run.lease_owner, run.attempts) == ("worker-a", 1)


def test_an_expired_lease_passes_to_the_next_worker(db: Any) -> None:
    run = services.run_start()
    services.run_claim(run_id=run.id, owner="worker-a")
    TrainingRun.objects.filter(id=run.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert services.run_claim(run_id=run.id, owner="worker-b") is not None
    assert services.runs_resume_stale(enqueue=lambda run_id: None) == []


def test_a_redelivered_message_for_a_finished_run_does_nothing(db: Any) -> None:
    run = services.run_start()
    TrainingRun.objects.filter(id=run.id).update(status=TrainingRun.Status.SUCCEEDED)
    assert pipeline.run_execute(run_id=run.id, owner="worker-b") is None


def test_a_worker_that_lost_its_lease_cannot_write(db: Any) -> None:
    run = services.run_start()
    services.run_claim(run_id=run.id, owner="worker-a")
    TrainingRun.objects.filter(id=run.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    services.run_claim(run_id=run.id, owner="worker-b")
    with pytest.raises(services.LeaseLost):
        services.run_update(run=run, owner="worker-a", step=5)


def test_cancelling_a_queued_run_stops_it_at_once(db: Any) -> None:
    run = services.run_cancel(run=services.run_start())
    assert run.status == TrainingRun.Status.CANCELLED
    assert pipeline.run_execute(run_id=run.id) is None


def test_a_run_that_keeps_dying_is_failed_clearly(db: Any) -> None:
    run = services.run_start()
    TrainingRun.objects.filter(id=run.id).update(attempts=pipeline.MAX_ATTEMPTS)
    run = pipeline.run_execute(run_id=run.id, owner="worker-z")
    assert run is not None and run.status == TrainingRun.Status.FAILED
    assert "gave up" in run.error


def test_starting_a_run_publishes_its_id_after_the_commit(db: Any, django_capture_on_commit_callbacks: Any) -> None:
    from unittest import mock

    with mock.patch("finetuning.tasks.training_run.delay") as delay:
        with django_capture_on_commit_callbacks(execute=True):
            run = services.run_start(enqueue=tasks.training_run.delay_on_commit)
    delay.assert_called_once_with(run.id)


def test_a_starting_worker_requeues_runs_whose_lease_expired(db: Any) -> None:
    from unittest import mock

    run = services.run_start()
    services.run_claim(run_id=run.id, owner="worker-a")
    TrainingRun.objects.filter(id=run.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    with mock.patch("finetuning.tasks.training_run.delay") as delay:
        tasks.resume_stale_runs()
    delay.assert_called_once_with(run.id)


def test_it_refuses_to_promote_a_version_that_was_never_evaluated(db: Any, tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    raw = ModelVersion.objects.create(name="raw", base_model="base", adapter_path=str(tmp_path / "raw"))
    with pytest.raises(services.GateRefused, match="not evaluated"):
        services.version_promote(version=raw)
    assert version_active() is None


def failing(name: str, tmp_path: Path) -> ModelVersion:
    refused = version(name, tmp_path)
    refused.metrics = {"checks": {"replay_f1_no_worse": True, "no_taught_facts_in_unrelated": False}}
    refused.save()
    return refused


def test_it_refuses_to_promote_a_version_whose_checks_failed(db: Any, tmp_path: Path) -> None:
    with pytest.raises(services.GateRefused, match="no_taught_facts_in_unrelated") as refusal:
        services.version_promote(version=failing("v1", tmp_path))
    assert refusal.value.refused == ["no_taught_facts_in_unrelated"]
    assert version_active() is None and not Promotion.objects.exists()


def test_it_refuses_a_version_whose_list_of_checks_is_empty(db: Any, tmp_path: Path) -> None:
    empty = version("v1", tmp_path)
    empty.metrics = {"checks": {}}
    empty.save()
    with pytest.raises(services.GateRefused, match="not evaluated"):
        services.version_promote(version=empty)


def test_an_admin_forces_a_refused_version_with_a_reason_that_is_stored(
    db: Any, tmp_path: Path, admin_user: Any
) -> None:
    refused = failing("v1", tmp_path)
    services.version_promote(version=refused, actor=admin_user, force=True, reason="  hotfix for the price typo ")
    assert version_active() == refused
    promotion = Promotion.objects.get()
    assert (promotion.forced, promotion.reason, promotion.actor) == (True, "hotfix for the price typo", admin_user)
    assert promotion.refused_checks == ["no_taught_facts_in_unrelated"]


def test_forcing_needs_a_written_reason(db: Any, tmp_path: Path, admin_user: Any) -> None:
    with pytest.raises(services.LearningLoopError, match="needs a written reason"):
        services.version_promote(version=failing("v1", tmp_path), actor=admin_user, force=True, reason="   ")
    assert version_active() is None and not Promotion.objects.exists()


def test_an_agent_cannot_force_a_refused_version(db: Any, tmp_path: Path, agent: Any) -> None:
    with pytest.raises(services.LearningLoopError, match="only an admin can force"):
        services.version_promote(version=failing("v1", tmp_path), actor=agent, force=True, reason="trust me")
    assert version_active() is None


def test_a_version_that_passed_is_promoted_unforced_even_when_force_is_asked(db: Any, tmp_path: Path) -> None:
    services.version_promote(version=version("v1", tmp_path), force=True, reason="habit")
    promotion = Promotion.objects.get()
    assert not promotion.forced and promotion.refused_checks == []


def test_a_promote_that_expects_another_version_changes_nothing(db: Any, tmp_path: Path) -> None:
    first, second = version("v1", tmp_path), version("v2", tmp_path)
    services.version_promote(version=first, expected=services.BASE)
    with pytest.raises(services.VersionChanged, match="v1 is serving now, not base"):
        services.version_promote(version=second, expected=services.BASE)
    assert version_active() == first
    assert Promotion.objects.count() == 1


def test_a_double_clicked_promote_promotes_once(db: Any, tmp_path: Path) -> None:
    first, second = version("v1", tmp_path), version("v2", tmp_path)
    services.version_promote(version=first)
    services.version_promote(version=second, expected="v1")
    services.version_promote(version=second, expected="v1")
    assert version_active() == second
    assert services.version_rollback() == first  # one push for v2, so one pop reaches v1


def test_a_double_clicked_rollback_goes_back_one_version(db: Any, tmp_path: Path) -> None:
    first, second = version("v1", tmp_path), version("v2", tmp_path)
    services.version_promote(version=first)
    services.version_promote(version=second)
    assert services.version_rollback(expected="v2") == first
    with pytest.raises(services.VersionChanged):
        services.version_rollback(expected="v2")
    assert version_active() == first


def test_two_active_versions_are_refused_by_the_database(db: Any, tmp_path: Path) -> None:
    from django.db import IntegrityError, transaction

    services.version_promote(version=version("v1", tmp_path))
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(name="v2").update(status=ModelVersion.Status.ACTIVE)
        version("v3", tmp_path)
        ModelVersion.objects.filter(name="v3").update(status=ModelVersion.Status.ACTIVE)


def test_a_constraint_violation_becomes_a_clear_error(db: Any, tmp_path: Path) -> None:
    from unittest import mock

    first, second = version("v1", tmp_path), version("v2", tmp_path)
    services.version_promote(version=first)
    # The retire step "misses" the version serving: the constraint stops a second active one.
    with mock.patch.object(
        services,
        "_activate",
        side_effect=lambda v: ModelVersion.objects.filter(id=v.id).update(status=ModelVersion.Status.ACTIVE),
    ):
        with pytest.raises(services.LearningLoopError, match="at the same moment"):
            services.version_promote(version=second)
    assert version_active() == first
    assert ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).count() == 1


def test_promoting_the_version_serving_clears_its_serve_error_only(db: Any, tmp_path: Path) -> None:
    first = version("v1", tmp_path)
    services.version_promote(version=first)
    services.version_mark_unservable(name="v1", error="boom")
    services.version_promote(version=first, expected="v1")
    first.refresh_from_db()
    assert first.serve_error == "" and Promotion.objects.count() == 1


def test_the_sweep_requeues_a_run_once_per_lease(db: Any) -> None:
    from unittest import mock

    run = services.run_start()
    services.run_claim(run_id=run.id, owner="worker-a")
    TrainingRun.objects.filter(id=run.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    delay = mock.Mock()
    assert services.runs_resume_stale(enqueue=delay) == [run.id]
    assert services.runs_resume_stale(enqueue=delay) == []
    delay.assert_called_once_with(run.id)
    assert services.run_claim(run_id=run.id, owner="worker-b") is not None  # at once, not after the lease


def test_the_sweep_requeues_a_queued_run_whose_message_was_lost(db: Any) -> None:
    from unittest import mock

    run = services.run_start()
    delay = mock.Mock()
    assert services.runs_resume_stale(enqueue=delay) == []  # just queued: its message is on its way
    TrainingRun.objects.filter(id=run.id).update(created_at=timezone.now() - timedelta(hours=1))
    assert services.runs_resume_stale(enqueue=delay) == [run.id]
    delay.assert_called_once_with(run.id)


def test_the_lease_keeper_renews_the_lease_while_nothing_else_writes(transactional_db: Any, settings: Any) -> None:
    settings.FINETUNING_LEASE_S = 2
    run = services.run_start()
    services.run_claim(run_id=run.id, owner="worker-a")
    with pipeline.LeaseKeeper(run.id, "worker-a") as keeper:
        first = TrainingRun.objects.get(id=run.id).lease_expires_at
        deadline = time.monotonic() + 60
        while TrainingRun.objects.get(id=run.id).lease_expires_at == first:
            assert time.monotonic() < deadline, "the lease was not renewed within a minute"
            time.sleep(0.1)
        keeper.check()


def test_the_lease_keeper_stops_the_run_once_its_lease_is_taken(transactional_db: Any, settings: Any) -> None:
    settings.FINETUNING_LEASE_S = 2
    run = services.run_start()
    services.run_claim(run_id=run.id, owner="worker-a")
    TrainingRun.objects.filter(id=run.id).update(lease_owner="worker-b")
    with pipeline.LeaseKeeper(run.id, "worker-a") as keeper:
        deadline = time.monotonic() + 60
        while not keeper.lost:
            assert time.monotonic() < deadline, "the keeper did not notice within a minute"
            time.sleep(0.1)
        with pytest.raises(services.LeaseLost):
            keeper.check()


def test_two_concurrent_run_starts_create_one_run(transactional_db: Any) -> None:
    results = race(services.run_start, services.run_start)
    assert TrainingRun.objects.count() == 1
    assert sorted(type(r).__name__ for r in results) == ["RunAlreadyActive", "TrainingRun"]


def test_a_run_reaches_its_pages_only_once_each_write_commits(db: Any, django_capture_on_commit_callbacks: Any) -> None:
    from unittest import mock

    run = services.run_start()
    with mock.patch("finetuning.events.run_changed") as pushed:
        with django_capture_on_commit_callbacks(execute=True):
            services.run_claim(run_id=run.id, owner="worker-a")
            services.run_update(run=run, owner="worker-a", step=1)
            services.run_cancel(run=run)
            assert not pushed.called  # a page reading the run now would not see these writes
        assert pushed.call_args_list == [mock.call(run.id)] * 3


def test_a_write_rolled_back_pushes_nothing(db: Any, django_capture_on_commit_callbacks: Any) -> None:
    from unittest import mock

    from django.db import transaction

    run = services.run_start()
    with mock.patch("finetuning.events.run_changed") as pushed:
        with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
            with transaction.atomic():
                services.run_cancel(run=run)
                raise RuntimeError("the caller's transaction fails after the cancel")
    assert not pushed.called
    assert TrainingRun.objects.get(id=run.id).status == TrainingRun.Status.QUEUED
