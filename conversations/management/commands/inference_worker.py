"""python manage.py inference_worker: load the model once (or reach its vLLM server) and answer every
conversation. ``INFERENCE_BACKEND`` picks the engine; ``--vllm-url`` names this worker's server."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations.inference.backends import engine_from_settings
from conversations.inference.vllm import VllmError
from conversations.worker import ConsumerNameTaken, InferenceWorker

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run the inference worker: holds the model (GPU if any) and streams replies to customers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--fake", action="store_true", help="Use the scripted fake engine (no torch).")
        parser.add_argument(
            "--consumer", default="", help="Stream consumer name, unique per worker (default: worker-HOSTNAME-PID)."
        )
        parser.add_argument(
            "--vllm-url",
            default="",
            help="Generate on the vLLM server at this URL (implies INFERENCE_BACKEND=vllm; default: VLLM_URL).",
        )

    def handle(self, *args: Any, fake: bool = False, consumer: str = "", vllm_url: str = "", **options: Any) -> None:
        try:
            engine = engine_from_settings(fake=fake, vllm_url=vllm_url)
        except (ValueError, VllmError) as error:  # a wrong backend, a vLLM server that refuses
            raise CommandError(str(error)) from None
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
