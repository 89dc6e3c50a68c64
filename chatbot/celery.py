"""The Celery application: dataset builds and LoRA training run here, on the queue `finetuning`."""

import os
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")

app = Celery("chatbot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["conversations.knowledge"])  # a package inside the app


@worker_init.connect
@worker_process_init.connect
def serve_chat_first(**_: Any) -> None:
    """Training yields the CPU to chat: lowered before torch starts any thread (they inherit it).
    worker_init covers the solo pool, where the main process trains; worker_process_init each
    prefork child."""
    from finetuning.priority import training_priority_apply

    training_priority_apply()
