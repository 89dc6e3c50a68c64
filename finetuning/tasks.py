"""Celery entry points: thin. The message carries a run id; the database row says what to do."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.signals import worker_ready

from . import services

log = logging.getLogger(__name__)


@shared_task(bind=True, queue="finetuning", acks_late=True, reject_on_worker_lost=True, max_retries=None)
def training_run(self: Any, run_id: int) -> str | None:
    """Run (or resume) a training run; a copy of the message arriving while another worker holds the
    lease comes back once that lease could have expired, and then finds the run finished or stale."""
    owner = f"{services.default_owner()}:{self.request.id}"
    try:
        run = services.run_execute(run_id=run_id, owner=owner)
    except services.LeaseHeld as held:
        raise self.retry(countdown=held.retry_in_s + 1) from held
    return run.status if run is not None else None


@worker_ready.connect
def resume_stale_runs(**_: Any) -> None:
    """A worker that starts after a kill -9 picks up runs whose lease expired."""
    try:
        stale = services.runs_resume_stale()
    except Exception:  # the database may not be reachable yet; the broker redelivers anyway
        log.exception("could not look for stale training runs")
        return
    if stale:
        log.info("re-queued stale training runs %s", stale)


@shared_task(queue="finetuning", acks_late=True)
def snapshot_build() -> int:
    """A dataset snapshot for the admin to browse before training."""
    return services.snapshot_build_now().id
