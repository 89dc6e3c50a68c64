"""Celery entry points: thin. The message carries a run id; the database row says what to do."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.db import connections

from conversations.erasure import retention_apply

from . import conf, pipeline, services
from .priority import training_priority_apply

log = logging.getLogger(__name__)


@shared_task(bind=True, queue="finetuning", acks_late=True, reject_on_worker_lost=True, max_retries=None)
def training_run(self: Any, run_id: int) -> str | None:
    """Run (or resume) a training run; a copy of the message arriving while another worker holds the
    lease comes back once that lease could have expired, and then finds the run finished or stale."""
    training_priority_apply()  # again, for threads started since the worker's own start
    owner = f"{pipeline.default_owner()}:{self.request.id}"
    try:
        run = pipeline.run_execute(run_id=run_id, owner=owner)
    except services.LeaseHeld as held:
        raise self.retry(countdown=held.retry_in_s + 1) from held
    return run.status if run is not None else None


def resume_stale_runs() -> None:
    try:
        stale = services.runs_resume_stale(enqueue=training_run.delay)
    except Exception:  # the database may be down for now: the next sweep looks again
        log.exception("could not look for stale training runs")
        return
    finally:
        connections.close_all()  # this thread's own: a broken one is never reused
    if stale:
        log.info("re-queued stale training runs %s", stale)


def redact_old_conversations() -> None:
    try:
        retention_apply()
    except Exception:  # the database may be down for now: the next pass redacts what this one missed
        log.exception("could not redact old conversations")
    finally:
        connections.close_all()


class Sweeper:
    """Every FINETUNING_SWEEP_S, re-queue runs whose worker died: a worker restarted within the
    lease would otherwise wait for the broker's one-hour redelivery. Every worker sweeps; the lease
    decides which message does the work. Every FINETUNING_RETENTION_EVERY_S it also redacts the
    conversations older than the admin's retention (a pass is idempotent: two workers' passes
    at once write each change once, the later pass finds nothing to change)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="finetuning-sweep", daemon=True)
        self.retention_due = 0.0  # monotonic time of the next retention pass: the first sweep does one

    def sweep(self) -> None:
        resume_stale_runs()
        if time.monotonic() >= self.retention_due:
            self.retention_due = time.monotonic() + conf.retention_every_seconds()
            redact_old_conversations()

    def _loop(self) -> None:
        self.sweep()
        while not self.stop.wait(conf.sweep_seconds()):
            self.sweep()


_sweeper: Sweeper | None = None


@worker_ready.connect
def start_sweeping(**_: Any) -> None:
    global _sweeper
    _sweeper = Sweeper()
    _sweeper.thread.start()


@worker_shutdown.connect
def stop_sweeping(**_: Any) -> None:
    if _sweeper is not None:
        _sweeper.stop.set()


@shared_task(queue="finetuning", acks_late=True)
def dataset_build(build_id: int) -> str | None:
    """A dataset snapshot for the admin to browse before training; the build's row follows it."""
    build = pipeline.build_execute(build_id=build_id)
    return build.status if build is not None else None
