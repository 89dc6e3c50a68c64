"""The learning loop's channel-layer code: a training run's progress, pushed to the pages watching it.

The Celery worker that runs the training publishes the run's payload (``selectors.run_payload``,
the same JSON as ``/training/runs/<id>.json``) after every stored change; each run page's socket
is in the group ``training.run.<id>``. A failure to publish never touches the run: the page also
polls when its socket is down.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync

from conversations.events import channel_layer

from . import selectors
from .models import TrainingRun

log = logging.getLogger(__name__)

RUN_HANDLER = "training.run"  # dispatched to ``training_run`` on the run consumer


def run_group(run_id: int) -> str:
    return f"training.run.{run_id}"


async def run_join(run_id: int, channel_name: str) -> None:
    await channel_layer().group_add(run_group(run_id), channel_name)


async def run_leave(run_id: int, channel_name: str) -> None:
    await channel_layer().group_discard(run_group(run_id), channel_name)


def run_changed(run_id: int) -> None:
    """Push the run's stored state to its pages (from synchronous code: services, Celery tasks)."""
    try:
        run = TrainingRun.objects.select_related("version").get(id=run_id)
        payload: dict[str, Any] = {"type": "run", "run": selectors.run_payload(run)}
        async_to_sync(channel_layer().group_send)(run_group(run_id), {"type": RUN_HANDLER, "payload": payload})
    except Exception:  # progress pages are a view: the run goes on whatever happens here
        log.warning("could not push the progress of run %s", run_id, exc_info=True)
