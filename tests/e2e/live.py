"""The whole system as `make run` serves it: daphne and the real inference worker as processes,
on the test database and the real Redis. The ``live_system`` fixture (tests/conftest.py) starts it
once per test session, so the model loads once; tests using it need committed data
(``transaction=True``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from django.conf import settings

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


class LiveSystem:
    """daphne and an inference worker (the real model, or ``--fake`` scripted replies)."""

    def __init__(self, *, fake: bool = False, prefix: str = "", env: dict[str, str] | None = None) -> None:
        """``prefix``: the Redis key and channel prefix, the test run's by default; one of its own
        keeps this system's requests from any other live system's worker. ``env``: overrides for
        every process, e.g. a ``REDIS_URL`` or ``DATABASE_URL`` of a fault test's own."""
        self.fake = fake
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
        daphne = ["-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "chatbot.asgi:application"]
        self.web = self._spawn("web", daphne)
        self.worker = self.start_worker()
        self._wait_until_up()

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(LOGS / f"{name}-{self.port}.log", "ab")  # noqa: SIM115 - lives as long as the process
        return subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT
        )

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
        for process in (self.worker, self.web):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()

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
        """Stop daphne: every open socket drops."""
        if self.web.poll() is None:
            self.web.terminate()
        try:
            self.web.wait(15)
        except subprocess.TimeoutExpired:
            self.web.kill()
            self.web.wait(5)

    def start_web(self, timeout: float = 60) -> None:
        """Start daphne again on the same port and wait until it answers."""
        daphne = ["-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "chatbot.asgi:application"]
        self.web = self._spawn("web", daphne)
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1)
                return
            except OSError:
                if self.web.poll() is not None:
                    raise RuntimeError(f"daphne exited; see {LOGS}") from None
                if time.monotonic() > deadline:
                    raise TimeoutError("daphne did not come back up") from None
                time.sleep(0.1)


SCRIPTED_WORKER = """
import asyncio, json, os, signal, sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
django.setup()

from django.conf import settings

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
