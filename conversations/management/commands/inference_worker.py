"""python manage.py inference_worker: load the model once and answer every conversation."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations.inference.backends import fake_engine, real_engine
from conversations.worker import ConsumerNameTaken, InferenceWorker

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run the inference worker: holds the model (GPU if any) and streams replies to customers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--fake", action="store_true", help="Use the scripted fake engine (no torch).")
        parser.add_argument(
            "--consumer", default="", help="Stream consumer name, unique per worker (default: worker-HOSTNAME-PID)."
        )

    def handle(self, *args: Any, fake: bool = False, consumer: str = "", **options: Any) -> None:
        engine = fake_engine() if fake else real_engine()
        worker = InferenceWorker(engine, flush_ms=settings.CHAT_STREAM_FLUSH_MS)
        if consumer:
            worker.consumer = consumer
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: worker.stop_event.set())
        try:
            asyncio.run(worker.run())
        except ConsumerNameTaken as taken:
            raise CommandError(str(taken)) from None
        if worker.exit_status:
            sys.exit(worker.exit_status)  # a loop could not recover: let the supervisor restart us
