from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.core.management import CommandError, call_command

from finetuning import services
from finetuning.models import ModelVersion, Promotion, TrainingRun
from finetuning.selectors import version_active


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_promote_and_rollback_commands(db: Any, tmp_path: Path) -> None:
    ModelVersion.objects.create(
        name="run-1", base_model="base", adapter_path=str(tmp_path), metrics={"checks": {"replay_f1_no_worse": True}}
    )
    assert "run-1 is now active" in run("promote", "run-1")
    assert version_active() is not None
    assert "the base model is now active" in run("rollback")
    with pytest.raises(CommandError):
        run("rollback")
    with pytest.raises(CommandError):
        run("promote", "run-404")


def test_promote_refuses_a_failed_version_unless_forced_with_a_reason(db: Any, tmp_path: Path) -> None:
    failed = {"checks": {"replay_f1_no_worse": False}}
    ModelVersion.objects.create(name="run-1", base_model="base", adapter_path=str(tmp_path), metrics=failed)
    with pytest.raises(CommandError, match="did not pass its checks"):
        run("promote", "run-1")
    with pytest.raises(CommandError, match="needs a written reason"):
        run("promote", "run-1", "--force")
    assert version_active() is None
    output = run("promote", "run-1", "--force", "--reason", "the base model is worse today")
    assert "run-1 is now active (forced past: replay_f1_no_worse)" in output
    assert Promotion.objects.get().reason == "the base model is worse today"


def test_retrain_queues_a_run_with_its_settings(db: Any, django_capture_on_commit_callbacks: Any) -> None:
    with mock.patch("finetuning.tasks.training_run.delay") as delay, django_capture_on_commit_callbacks(execute=True):
        output = run("retrain", "--set", "epochs=2", "--set", "learning_rate=0.002")
    queued = TrainingRun.objects.get()
    assert f"training run {queued.id} queued" in output
    assert queued.config == {"epochs": 2, "learning_rate": 0.002}
    delay.assert_called_once_with(queued.id)


def test_retrain_refuses_while_a_run_is_active(db: Any) -> None:
    services.run_start()
    with pytest.raises(CommandError, match="already"):
        run("retrain")


def test_retrain_wait_prints_progress_until_the_run_ends(db: Any) -> None:
    def finish(run_id: int) -> None:
        TrainingRun.objects.filter(id=run_id).update(
            status="failed", step=2, total_steps=4, loss_history=[[1, 2.0], [2, 1.0]], error="boom"
        )

    with mock.patch("finetuning.tasks.training_run.delay_on_commit", side_effect=finish):
        with pytest.raises(CommandError, match="boom"):
            run("retrain", "--wait")
