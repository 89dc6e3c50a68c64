"""The whole system as `make run` serves it: the web tier (chatbot/web.py: uvicorn, one process
unless a test asks for more) and the real inference worker as processes, on the test database and
the real Redis. The ``live_system`` fixture (tests/conftest.py) starts it
once per test session, so the model loads once; tests using it need committed data
(``transaction=True``)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from django.conf import settings

from chatbot import web

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "var" / "test-logs"


def database_url() -> str:
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


# Every browser and client of a test run or a bench comes from 127.0.0.1: limits meant for one
# address on the internet would throttle them all together.
LOOPBACK_LIMITS = {
    "CHAT_RATE_LIMIT_MESSAGES": "100000",
    "CHAT_RATE_LIMIT_CONVERSATIONS": "100000",
    "CHAT_ADDRESS_CUSTOMERS": "100000",
    "CHAT_ADDRESS_SOCKETS": "100000",
    "CHAT_ADDRESS_FRAMES": "100000",
    "CHAT_SOCKETS_PER_CUSTOMER": "1000",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listens(process: psutil.Process, port: int) -> bool:
    try:
        connections = process.net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections)


def web_workers(pid: int, port: int) -> list[psutil.Process]:
    """The processes that accept the web tier's connections on ``port``: uvicorn's worker processes
    under its supervisor ``pid`` (``--workers`` above 1: each shares the supervisor's listening
    socket), else the web process itself."""
    root = psutil.Process(pid)
    return [child for child in root.children() if listens(child, port)] or [root]


def connection_holder(workers: list[psutil.Process], port: int, client_port: int) -> psutil.Process:
    """Which of ``workers`` holds the TCP connection a client made from ``client_port`` to ``port``."""
    for worker in workers:
        for c in worker.net_connections(kind="tcp"):
            if c.laddr.port == port and c.raddr and c.raddr.port == client_port:
                return worker
    raise LookupError(f"no web process holds the connection from port {client_port}")


class LiveSystem:
    """The web tier and an inference worker (the real model, or ``--fake`` scripted replies)."""

    def __init__(
        self,
        *,
        fake: bool = False,
        prefix: str = "",
        env: dict[str, str] | None = None,
        web_processes: int = 1,
    ) -> None:
        """``prefix``: the Redis key and channel prefix, the test run's by default; one of its own
        keeps this system's requests from any other live system's worker. ``env``: overrides for
        every process, e.g. a ``REDIS_URL`` or ``DATABASE_URL`` of a fault test's own (a
        ``WEB_SERVER`` there picks the server). ``web_processes``: how many web processes share
        the port (one keeps the tests fast; tests/e2e/test_web_processes.py runs two)."""
        self.fake = fake
        self.web_processes = web_processes
        prefix = prefix or settings.REDIS_KEY_PREFIX
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "REDIS_KEY_PREFIX": prefix,
            "CHANNEL_PREFIX": prefix,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            **LOOPBACK_LIMITS,
            "GENERATION_MAX_NEW_TOKENS": os.environ.get("E2E_MAX_NEW_TOKENS", "96"),
            "GENERATION_TEMPERATURE": "0",  # greedy: what the model says is repeatable
            "INFERENCE_THREADS": os.environ.get("INFERENCE_THREADS", "2"),
            # The replies these tests expect were measured in fp32; on a CPU with a bf16 unit
            # ``auto`` would pick bf16 (tests/inference/test_bf16.py covers that path).
            "INFERENCE_DTYPE": os.environ.get("INFERENCE_DTYPE", "fp32"),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        LOGS.mkdir(parents=True, exist_ok=True)
        self.web = self._spawn_web()
        self.worker = self.start_worker()
        self._wait_until_up()

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None, **options: Any
    ) -> subprocess.Popen[bytes]:
        """``python ARGS...`` (or ``args`` as they are when they start with the interpreter)."""
        log = open(LOGS / f"{name}-{self.port}.log", "ab")  # noqa: SIM115 - lives as long as the process
        argv = args if args[:1] == [sys.executable] else [sys.executable, *args]
        environment = {**self.env, **(env or {})}
        return subprocess.Popen(argv, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT, **options)

    def _spawn_web(self) -> subprocess.Popen[bytes]:
        # A process group of its own, so that stopping it stops its worker processes too.
        command = web.command(
            host="127.0.0.1", port=self.port, processes=self.web_processes, server=self.env.get("WEB_SERVER") or None
        )
        return self._spawn("web", command, start_new_session=True)

    def web_workers(self) -> list[psutil.Process]:
        """The processes that accept this system's web connections (see ``web_workers``)."""
        return web_workers(self.web.pid, self.port)

    def start_worker(self) -> subprocess.Popen[bytes]:
        command = ["manage.py", "inference_worker", "--consumer", f"e2e-{self.port}"] + (
            ["--fake"] if self.fake else []
        )
        self.worker = self._spawn("worker", command)
        return self.worker

    def start_celery(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        """A real Celery worker on the ``finetuning`` queue, on this system's database and Redis."""
        command = ["-m", "celery", "-A", "chatbot", "worker", "-Q", "finetuning", "-P", "solo", "-l", "info"]
        command += ["-n", f"e2e-{self.port}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        return self._spawn("celery", command, env)

    def kill_worker(self) -> None:
        self.worker.send_signal(signal.SIGKILL)
        self.worker.wait(10)

    def worker_online(self) -> bool:
        import json

        with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
            return bool(json.load(response)["worker_online"])

    def wait_for_worker(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.worker_online():
            if self.worker.poll() is not None:
                raise RuntimeError(f"the inference worker exited; see {LOGS}")
            if time.monotonic() > deadline:
                raise TimeoutError("the inference worker did not come up")
            time.sleep(0.2)

    def _wait_until_up(self) -> None:
        for _ in range(300):
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        self.wait_for_worker()

    def stop(self) -> None:
        for process in (self.worker, self.web):
            if process.poll() is None:
                process.terminate()
        try:
            self.worker.wait(15)
        except subprocess.TimeoutExpired:
            self.worker.kill()
        self._wait_web_gone()

    def _wait_web_gone(self) -> None:
        """The web process (told to stop) gone, and whatever is left of its group killed."""
        try:
            self.web.wait(15)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.web.pid, signal.SIGKILL)  # its worker processes, if any outlived it
        self.web.wait(5)

    # Helpers for the resilience tests (tests/e2e/test_browser_resilience.py): a fake worker with
    # replies of the test's choosing, and the web process stopped and started on the same port.

    def start_scripted_worker(
        self,
        script: dict[str, str],
        *,
        default_reply: str = "",
        step_delay_s: float = 0.05,
        max_new_tokens: int = 1000,
    ) -> subprocess.Popen[bytes]:
        """The fake engine (one word, one token, per step) answering ``script[last customer text]``;
        the ``--fake`` command's replies are fixed. Same consumer name as ``start_worker``."""
        import json

        spec = {"script": script, "default_reply": default_reply, "step_delay_s": step_delay_s}
        command = ["-c", SCRIPTED_WORKER, f"e2e-{self.port}"]
        env = {"SCRIPTED_WORKER_SPEC": json.dumps(spec), "GENERATION_MAX_NEW_TOKENS": str(max_new_tokens)}
        self.worker = self._spawn("worker", command, env)
        return self.worker

    def stop_worker(self) -> None:
        """Stop the worker as Ctrl-C does: it takes its heartbeat down with it (no 10 s expiry)."""
        if self.worker.poll() is None:
            self.worker.terminate()
        self.worker.wait(30)

    def stop_web(self) -> None:
        """Stop the web tier, every process of it: every open socket drops."""
        if self.web.poll() is None:
            self.web.terminate()
        self._wait_web_gone()

    def start_web(self, timeout: float = 60) -> None:
        """Start the web tier again on the same port and wait until it answers."""
        self.web = self._spawn_web()
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1)
                return
            except OSError:
                if self.web.poll() is not None:
                    raise RuntimeError(f"the web process exited; see {LOGS}") from None
                if time.monotonic() > deadline:
                    raise TimeoutError("the web tier did not come back up") from None
                time.sleep(0.1)


SCRIPTED_WORKER = """
import asyncio, json, os, signal, sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
django.setup()

import psutil
from django.conf import settings

from chatbot import web

from conversations.inference.fake import FakeEngine
from conversations.worker import InferenceWorker

spec = json.loads(os.environ["SCRIPTED_WORKER_SPEC"])
options = {"default_reply": spec["default_reply"]} if spec["default_reply"] else {}
engine = FakeEngine(spec["script"], step_delay_s=spec["step_delay_s"], **options)
worker = InferenceWorker(engine, flush_ms=settings.CHAT_STREAM_FLUSH_MS)
worker.consumer = sys.argv[1]
for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, lambda *_: worker.stop_event.set())
asyncio.run(worker.run())
sys.exit(worker.exit_status)
"""
