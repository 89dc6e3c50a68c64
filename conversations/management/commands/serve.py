"""python manage.py serve: run the whole system on one machine (what `make run` ends with).

Starts Redis when none answers on REDIS_URL, then the web tier (chatbot/web.py: uvicorn, its
``--processes`` worker processes sharing one port, WEB_PROCESSES by default; uvicorn itself
restarts a worker process that dies), the inference worker and a Celery worker, and supervises
them: a process that dies is restarted after a backoff (1, 2, 4 … seconds, capped; reset once it
has stayed up a while) while the others keep serving. It prints
"Ready" once /healthz says the database, Redis, the web and the worker are all up, and what it
waits for until then. Ctrl-C stops every process it started.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from chatbot import local_redis, web
from conversations import health

log = logging.getLogger(__name__)

TICK_S = 0.2
RESTARTING_TTL_S = 15.0  # renewed every tick while serve brings the worker back; outlives serve by this
KEEPS_DYING_AFTER = 3  # deaths in a row, each before SERVE_STABLE_AFTER_S, before serve says so plainly


@dataclass
class Child:
    name: str
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0  # time.monotonic()
    started_wall: float = 0.0  # time.time(), to tell a new worker's heartbeat from the dead one's
    failures: int = 0  # deaths in a row, each soon after its start: the backoff's exponent
    restarts: int = 0
    restart_at: float | None = None


def exit_description(status: int) -> str:
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"status {status}"


def restart_wait(failures: int) -> float:
    """Seconds before the next start of a child that has died ``failures`` times in a row (from 0)."""
    return float(min(settings.SERVE_RESTART_BACKOFF_S * 2**failures, settings.SERVE_RESTART_BACKOFF_MAX_S))


class Command(BaseCommand):
    help = (
        "Serve everything: Redis (if needed), the web processes (uvicorn), inference worker, Celery worker; "
        "restart what dies."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--fake-worker",
            action="store_true",
            help="Run the inference worker with --fake (scripted replies, no torch).",
        )
        parser.add_argument(
            "--processes",
            type=int,
            default=0,
            help="Web processes sharing the port (default: WEB_PROCESSES; 0 there: one per core, at most "
            "WEB_PROCESSES_MAX).",
        )

    def handle(
        self, *args: Any, host: str, port: int, fake_worker: bool = False, processes: int = 0, **options: Any
    ) -> None:
        try:
            web_command = web.command(host=host, port=port, processes=processes or None)
            web_processes = web.describe(processes=processes or None)
        except ValueError as error:
            raise CommandError(str(error)) from None
        self.children: list[Child] = []
        self.stopping = False
        self.worker_restarting = False
        # Each child runs in a session of its own, so a Ctrl-C reaches only this process: it stops
        # watching, then stops every child's whole process group (_stop_all).
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._request_stop)
        try:
            self._ensure_redis()
            python = sys.executable
            self._start("web", web_command, f"{web_processes} on {host}:{port}")
            self._start("inference", [python, "manage.py", "inference_worker", *(["--fake"] if fake_worker else [])])
            celery = [python, "-m", "celery", "-A", "chatbot", "worker", "-Q", "default,finetuning"]
            self._start("celery", [*celery, "--concurrency", "1", "--loglevel", "INFO"])
            url = f"http://{host}:{port}/"
            self._wait_until_ready(url)
            if self.stopping:
                return
            self.stdout.write(self.style.SUCCESS(f"\nReady: {url}  (agents: {url}agent/, admins: {url}admin/)"))
            self.stdout.write(f"Web: {web_processes} serving {url}")
            self.stdout.write("Ctrl-C stops every process.")
            while not self.stopping:
                self._tick()
                time.sleep(TICK_S)
        finally:
            self._stop_all()

    def _request_stop(self, *_: object) -> None:
        self.stopping = True

    def _ensure_redis(self) -> None:
        try:
            process = local_redis.start_if_needed(settings.REDIS_URL, say=self.stdout.write, cwd=settings.BASE_DIR)
        except local_redis.RedisUnavailable as error:
            raise CommandError(str(error)) from None
        if process is not None:
            child = Child("redis", local_redis.server_command(settings.REDIS_URL, str(process.args[0])))
            self._started(child, process)

    def _start(self, name: str, command: list[str], what: str = "") -> None:
        self.stdout.write(f"  starting {name}" + (f" ({what})" if what else ""))
        self._spawn(Child(name, command))

    def _spawn(self, child: Child) -> None:
        self._started(child, local_redis.spawn(child.command, cwd=settings.BASE_DIR))

    def _started(self, child: Child, process: subprocess.Popen[bytes]) -> None:
        child.process, child.restart_at = process, None
        child.started_at, child.started_wall = time.monotonic(), time.time()
        if child not in self.children:
            self.children.append(child)

    def _wait_until_ready(self, url: str) -> None:
        said = ""
        while not self.stopping:
            self._tick()
            waiting = self._waiting_for(url)
            if not waiting:
                return
            if waiting != said:
                self.stdout.write(f"  waiting for {waiting}...")
                said = waiting
            time.sleep(TICK_S)

    def _waiting_for(self, url: str) -> str:
        """What is not up yet, from the web's /healthz (empty once everything is)."""
        try:
            with urllib.request.urlopen(url + "healthz", timeout=10) as response:
                report = json.load(response)
        except urllib.error.HTTPError as error:  # 503: the body still says which part is down
            report = json.load(error)
        except (OSError, ValueError):
            return "the web server to answer"
        for part in ("database", "redis"):
            if report.get(part) != "ok":
                return f"the {part} ({report.get(part)})"
        if report.get("worker") != "online":
            return "the inference worker to load the model; messages wait until it is up"
        return ""

    def _tick(self) -> None:
        for child in self.children:
            if not self.stopping:
                self._supervise(child)
        if self.worker_restarting and not self.stopping:
            self._follow_worker_restart()

    def _supervise(self, child: Child) -> None:
        now = time.monotonic()
        if child.process is None:
            if child.restart_at is not None and now >= child.restart_at:
                self.stdout.write(f"  restarting {child.name} (restart {child.restarts})")
                self._spawn(child)
            return
        status = child.process.poll()
        if status is None:
            if child.failures and now - child.started_at >= settings.SERVE_STABLE_AFTER_S:
                child.failures = 0
            return
        self._schedule_restart(child, status, now)

    def _schedule_restart(self, child: Child, status: int, now: float) -> None:
        assert child.process is not None
        local_redis.stop([child.process], timeout=0)  # what its group left behind (a Celery pool): killed
        uptime = now - child.started_at
        if uptime >= settings.SERVE_STABLE_AFTER_S:
            child.failures = 0
        wait = restart_wait(child.failures)
        child.failures += 1
        child.restarts += 1
        child.process, child.restart_at = None, now + wait
        if child.name == "inference":
            self._worker_died()
        self.stdout.write(
            self.style.WARNING(
                f"{child.name} exited ({exit_description(status)}) after {uptime:.1f} s; "
                f"restart {child.restarts} in {wait:.1f} s"
            )
        )
        if child.failures >= KEEPS_DYING_AFTER:
            self.stderr.write(
                f"{child.name} keeps dying right after it starts ({child.failures} times in a row): see its "
                f"output above. serve keeps restarting it, at most every {settings.SERVE_RESTART_BACKOFF_MAX_S:.0f} s."
            )

    def _worker_died(self) -> None:
        """From now until a new worker beats, the chat says the assistant is restarting, and the
        customers whose reply was in flight are told so at once."""
        self.worker_restarting = True
        self._say_restarting()
        threading.Thread(target=self._announce_restarting, name="announce-restarting", daemon=True).start()

    def _say_restarting(self) -> None:
        try:
            health.worker_restarting_set(ttl_s=RESTARTING_TTL_S)
        except redis.RedisError as error:  # Redis is down too: nobody can read the key anyway
            log.warning("could not mark the worker restarting: %s", error)

    def _announce_restarting(self) -> None:
        try:
            health.worker_restarting_announce()
        except Exception:  # the database or Redis may be what killed the worker: the key still says it
            log.warning("could not tell the customers the assistant is restarting", exc_info=True)
        finally:
            connections.close_all()

    def _follow_worker_restart(self) -> None:
        worker = next(child for child in self.children if child.name == "inference")
        try:
            back = worker.process is not None and health.worker_beat_since(worker.started_wall)
            if back:
                health.worker_restarting_clear()
        except redis.RedisError:
            return
        if back:
            self.worker_restarting = False
            self.stdout.write(self.style.SUCCESS("The inference worker is back: the bot answers."))
        else:
            self._say_restarting()

    def _stop_all(self) -> None:
        if not self.children:
            return
        self.stdout.write("Stopping...")
        if self.worker_restarting:
            try:
                health.worker_restarting_clear()
            except redis.RedisError:
                pass
        running = [child.process for child in self.children if child.process is not None]
        redis_server = [child.process for child in self.children if child.name == "redis" and child.process]
        local_redis.stop([process for process in running if process not in redis_server])
        local_redis.stop(redis_server)  # last: the others use it while they shut down
        self.stdout.write("All processes stopped.")
