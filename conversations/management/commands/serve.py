"""python manage.py serve: run the whole system on one machine (what `make run` ends with).

Starts Redis when none answers on REDIS_URL, then the ASGI server, the inference worker and a
Celery worker; prints the URL once the site answers; Ctrl-C stops every process it started.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any
from urllib.parse import urlparse

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Serve everything: Redis (if needed), web (daphne), inference worker, Celery worker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopping = False
        # Ctrl-C reaches the children too (same process group); we only stop watching and tidy up.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._request_stop)
        try:
            self._ensure_redis()
            python = sys.executable
            self._start("web", ["-m", "daphne", "-b", host, "-p", str(port), "chatbot.asgi:application"], python)
            self._start("inference", ["manage.py", "inference_worker"], python)
            self._start(
                "celery",
                [
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
                python,
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
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1)
        try:
            client.ping()
            return
        except redis.ConnectionError:
            pass
        where = urlparse(settings.REDIS_URL)
        if where.hostname not in {"127.0.0.1", "localhost", "::1"} or not shutil.which("redis-server"):
            raise CommandError(
                f"No Redis answers on {settings.REDIS_URL}. Install one (apt-get install redis-server) "
                "or point REDIS_URL at a running Redis."
            )
        self.stdout.write(f"Starting redis-server on port {where.port or 6379}...")
        self._start(
            "redis",
            ["--port", str(where.port or 6379), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            "redis-server",
        )
        for _ in range(50):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.1)
        raise CommandError("redis-server did not come up.")

    def _start(self, name: str, args: list[str], program: str) -> None:
        self.stdout.write(f"  starting {name}")
        self.children.append((name, subprocess.Popen([program, *args], cwd=settings.BASE_DIR)))

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
        for name, child in self.children:
            if child.poll() is not None:
                raise CommandError(f"{name} exited with status {child.returncode}; stopping the rest.")

    def _stop_all(self) -> None:
        for _, child in reversed(self.children):
            if child.poll() is None:
                child.terminate()
        for _, child in self.children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        self.stdout.write("All processes stopped.")
