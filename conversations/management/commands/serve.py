"""python manage.py serve: run the whole system on one machine (what `make run` ends with).

Starts Redis when none answers on REDIS_URL, then the ASGI server, the inference worker and a
Celery worker; prints the URL once the site answers; Ctrl-C stops every process it started.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatbot import local_redis


class Command(BaseCommand):
    help = "Serve everything: Redis (if needed), web (daphne), inference worker, Celery worker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--fake-worker",
            action="store_true",
            help="Run the inference worker with --fake (scripted replies, no torch).",
        )

    def handle(self, *args: Any, host: str, port: int, fake_worker: bool = False, **options: Any) -> None:
        self.redis: subprocess.Popen[bytes] | None = None
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopping = False
        # Each child runs in a session of its own, so a Ctrl-C reaches only this process: it stops
        # watching, then stops every child's whole process group (_stop_all).
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._request_stop)
        try:
            self._ensure_redis()
            python = sys.executable
            self._start("web", [python, "-m", "daphne", "-b", host, "-p", str(port), "chatbot.asgi:application"])
            self._start("inference", [python, "manage.py", "inference_worker", *(["--fake"] if fake_worker else [])])
            self._start(
                "celery",
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "chatbot",
                    "worker",
                    "-Q",
                    "default,finetuning",
                    "--concurrency",
                    "1",
                    "--loglevel",
                    "INFO",
                ],
            )
            url = f"http://{host}:{port}/"
            self._wait_for(url)
            if self.stopping:
                return
            self.stdout.write(self.style.SUCCESS(f"\nReady: {url}  (agents: {url}agent/, admins: {url}admin/)"))
            self._wait_for_worker()
            self.stdout.write("Ctrl-C stops every process.")
            self._watch()
        finally:
            self._stop_all()

    def _request_stop(self, *_: object) -> None:
        self.stopping = True

    def _ensure_redis(self) -> None:
        try:
            self.redis = local_redis.start_if_needed(settings.REDIS_URL, say=self.stdout.write, cwd=settings.BASE_DIR)
        except local_redis.RedisUnavailable as error:
            raise CommandError(str(error)) from None

    def _start(self, name: str, command: list[str]) -> None:
        self.stdout.write(f"  starting {name}")
        self.children.append((name, local_redis.spawn(command, cwd=settings.BASE_DIR)))

    def _wait_for_worker(self) -> None:
        from conversations import dispatch

        if not dispatch.worker_online():
            self.stdout.write("The inference worker is loading the model; messages wait until it is up...")
        while not self.stopping and not dispatch.worker_online():
            self._check_children()
            time.sleep(0.5)
        if not self.stopping:
            self.stdout.write(self.style.SUCCESS("The inference worker is up: the bot answers."))

    def _wait_for(self, url: str) -> None:
        for _ in range(600):
            if self.stopping:
                return
            self._check_children()
            try:
                urllib.request.urlopen(url + "healthz", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        raise CommandError(f"The web server did not answer on {url}")

    def _watch(self) -> None:
        while not self.stopping:
            self._check_children()
            time.sleep(0.5)

    def _check_children(self) -> None:
        if self.stopping:
            return
        for name, child in [*([("redis", self.redis)] if self.redis else []), *self.children]:
            if child.poll() is not None:
                raise CommandError(f"{name} exited with status {child.returncode}; stopping the rest.")

    def _stop_all(self) -> None:
        if not self.children and self.redis is None:
            return
        self.stdout.write("Stopping...")
        local_redis.stop([child for _, child in self.children])
        if self.redis is not None:  # last: the others use it while they shut down
            local_redis.stop([self.redis])
        self.stdout.write("All processes stopped.")
