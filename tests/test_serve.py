"""`python manage.py serve` (what `make run` ends with) and the Redis it starts, as real processes.

The run uses the scripted fake inference worker (no torch, no model), a Redis of its own on a free
port and the test database.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from chatbot import local_redis
from tests.e2e.live import LOOPBACK_LIMITS, database_url, free_port, web_workers

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, **LOOPBACK_LIMITS, "PYTHONUNBUFFERED": "1", "ALLOWED_HOSTS": "127.0.0.1,localhost"}
ENV.pop("CELERY_BROKER_URL", None)  # the broker is the Redis on REDIS_URL
NO_REDIS_SERVER = str(Path(sys.executable).parent)  # a PATH without redis-server on it
HOW_TO_GET_REDIS = "apt-get install redis-server"


class Output:
    """A process's output, read line by line in a thread, so tests can wait for a line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        threading.Thread(target=self._read, args=(process.stdout,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise AssertionError(f"no {text!r} in {timeout} s:\n{self.text}") from None
            if line is None:
                raise AssertionError(f"the process ended before printing {text!r}:\n{self.text}")
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines[-60:])


def unused_redis_url() -> str:
    port = free_port()
    assert not local_redis.answers(f"redis://127.0.0.1:{port}/0")
    return f"redis://127.0.0.1:{port}/0"


def gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def serve(*args: str, env: dict[str, str], **options: Any) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "manage.py", "serve", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, **options)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0]


@dataclass
class Served:
    process: subprocess.Popen[str]
    output: Output
    url: str
    started: list[psutil.Process] = field(default_factory=list)  # what the test saw serve start


@pytest.fixture
def served(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Served]:
    """serve on free ports with two web processes, its Redis started by itself; whatever it leaves is
    killed afterwards."""
    port = free_port()
    env = {**ENV, "REDIS_URL": unused_redis_url(), "DATABASE_URL": database_url(), "WEB_PROCESSES": "1"}
    command = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port), "--fake-worker"]
    command += ["--processes", "2"]  # the option wins over WEB_PROCESSES
    # A session of its own, like a terminal's foreground job: the test's Ctrl-C reaches serve alone.
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    run = Served(process, Output(process), f"http://127.0.0.1:{port}/")
    try:
        yield run
    finally:
        leftovers = list(run.started)
        if process.poll() is None:  # the test failed early: serve and all it started
            leftovers += [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        for leftover in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()
        process.wait(10)


@pytest.mark.django_db(transaction=True)
def test_serve_runs_everything_and_ctrl_c_stops_every_process_it_started(served: Served) -> None:
    process, output, url = served.process, served.output, served.url
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    output.wait_for("Starting redis-server", timeout=30)
    output.wait_for(f"starting web (uvicorn, 2 processes on 127.0.0.1:{port})", timeout=30)
    output.wait_for(f"Ready: {url}", timeout=120)
    output.wait_for(f"Web: uvicorn, 2 processes serving {url}", timeout=5)
    output.wait_for("Ctrl-C stops every process.", timeout=60)  # the fake worker is online
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200

    serve_process = psutil.Process(process.pid)
    children = {" ".join(child.cmdline()): child for child in serve_process.children()}
    celery = next(child for line, child in children.items() if "celery -A chatbot worker" in line)
    deadline = time.monotonic() + 60
    while not celery.children() and time.monotonic() < deadline:  # the prefork pool starts after the main process
        time.sleep(0.2)
    pool = celery.children()
    assert pool, "the Celery worker started no pool process"
    for expected in ("redis-server", "uvicorn chatbot.asgi", "inference_worker --fake", "celery -A chatbot worker"):
        assert any(expected in line for line in children), f"{expected} is not running: {list(children)}"
    web = next(child for line, child in children.items() if "uvicorn chatbot.asgi" in line)
    workers = web_workers(web.pid, port)
    assert len(workers) == 2 and web not in workers, "the web tier is not two processes on the one port"
    everything = served.started = serve_process.children(recursive=True)
    assert set(pool) <= set(everything) and set(workers) <= set(everything)

    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in serve's terminal
    assert process.wait(timeout=60) == 0, output.text
    output.wait_for("All processes stopped.", timeout=5)
    deadline = time.monotonic() + 5
    while not all(gone(child) for child in everything) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [" ".join(child.cmdline()) for child in everything if not gone(child)]
    assert not left, f"still running after Ctrl-C: {left}"


def test_serve_without_redis_or_redis_server_stops_with_one_line_saying_how_to_get_one() -> None:
    url = unused_redis_url()
    result = serve(env={**ENV, "REDIS_URL": url, "PATH": NO_REDIS_SERVER})
    assert_one_line_error(result, url, HOW_TO_GET_REDIS)


def test_serve_refuses_a_wrong_number_of_web_processes_in_one_line() -> None:
    result = serve(env={**ENV, "REDIS_URL": unused_redis_url(), "WEB_PROCESSES": "lots"})
    assert_one_line_error(result, "WEB_PROCESSES='lots'", "whole number")
    result = serve("--processes", "2", env={**ENV, "REDIS_URL": unused_redis_url(), "WEB_SERVER": "daphne"})
    assert_one_line_error(result, "daphne serves from one process")


def test_serve_with_an_unresponsive_remote_redis_stops_with_one_line() -> None:
    # A socket that accepts connections (the kernel's backlog) but never answers: PING times out,
    # redis.TimeoutError rather than ConnectionError. 127.0.0.2 is not "this machine" for serve.
    with socket.socket() as silent:
        silent.bind(("127.0.0.2", 0))
        silent.listen()
        url = f"redis://127.0.0.2:{silent.getsockname()[1]}/0"
        with pytest.raises(redis.TimeoutError):
            redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
        result = serve(env={**ENV, "REDIS_URL": url})
    assert_one_line_error(result, url, "not on this machine")


def test_serve_says_so_when_the_redis_it_starts_cannot_take_the_port() -> None:
    # Something that is not Redis holds the local port: the redis-server serve starts cannot bind it.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = serve(env={**ENV, "REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    assert_one_line_error(result, "redis-server exited", f"port {port}")


def test_stop_kills_what_is_left_of_a_process_group_after_the_timeout() -> None:
    # A leader and its child, both deaf to Ctrl-C: a Celery worker busy with a task, and its pool.
    script = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN);"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        "print(child.pid, flush=True); time.sleep(60)"
    )
    leader = local_redis.spawn([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert leader.stdout is not None
    child = psutil.Process(int(leader.stdout.readline()))
    try:
        started = time.monotonic()
        local_redis.stop([leader], timeout=1)
        assert time.monotonic() - started < 5
        assert leader.returncode == -signal.SIGKILL
        deadline = time.monotonic() + 5
        while not gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(child), "the leader's child outlived stop()"
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


# `make test` runs pytest under `python -m chatbot.local_redis -- ...`: the same start and stop.

PROBE = (
    "import os, redis; url = os.environ['REDIS_URL'];print('probe', url, redis.Redis.from_url(url).ping(), flush=True)"
)


def wrapped(*command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    wrapper = [sys.executable, "-m", "chatbot.local_redis", "--", *command]
    return subprocess.run(wrapper, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_the_wrapper_starts_a_redis_for_the_command_and_stops_it_after() -> None:
    url = unused_redis_url()
    result = wrapped(sys.executable, "-c", PROBE + "; raise SystemExit(3)", env={**ENV, "REDIS_URL": url})
    assert result.returncode == 3, result.stderr  # the command's own status
    assert f"probe {url} True" in result.stdout
    assert "Starting redis-server" in result.stdout
    assert not local_redis.answers(url), "the wrapper left its redis-server running"
    address = url.removeprefix("redis://").removesuffix("/0")  # redis-server's process title names it
    servers = [
        p for p in psutil.process_iter(["cmdline"]) if address in " ".join(p.info["cmdline"] or []) and not gone(p)
    ]
    assert not servers, "the wrapper left its redis-server running"


def test_the_wrapper_uses_a_redis_that_already_answers(redis_client: Any) -> None:
    from django.conf import settings

    result = wrapped(sys.executable, "-c", PROBE, env={**ENV, "REDIS_URL": settings.REDIS_URL})
    assert result.returncode == 0, result.stderr
    assert f"probe {settings.REDIS_URL} True" in result.stdout
    assert "Starting redis-server" not in result.stdout
    assert redis_client.ping()  # and leaves it running


def test_the_wrapper_without_redis_server_stops_with_one_line_and_runs_nothing() -> None:
    url = unused_redis_url()
    result = wrapped(sys.executable, "-c", PROBE, env={**ENV, "REDIS_URL": url, "PATH": NO_REDIS_SERVER})
    assert_one_line_error(result, url, HOW_TO_GET_REDIS)
    assert "probe" not in result.stdout


def test_a_fresh_clone_without_var_migrates_and_gets_the_folders_it_needs(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    ignored = shutil.ignore_patterns(".git", ".venv", "var", ".cache", "*_cache", "__pycache__", "node_modules")
    shutil.copytree(ROOT, clone, ignore=ignored)
    assert not (clone / "var").exists()
    env = {k: v for k, v in ENV.items() if k not in ("DATABASE_URL", "ADAPTERS_DIR", "MODEL_CACHE_DIR")}
    command = [sys.executable, "manage.py", "migrate", "--no-input"]
    result = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (clone / "var" / "db.sqlite3").is_file()
    assert (clone / "var" / "adapters").is_dir() and (clone / ".cache" / "models").is_dir()


def test_serve_does_not_say_ready_while_the_database_is_unusable_and_says_what_it_waits_for() -> None:
    port = free_port()
    unreachable = f"postgres://postgres@127.0.0.1:{free_port()}/chatbot"  # nothing listens there
    env = {**ENV, "REDIS_URL": unused_redis_url(), "DATABASE_URL": unreachable}
    command = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port), "--fake-worker"]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    output = Output(process)
    try:
        output.wait_for("waiting for the database (down: ", timeout=120)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30)
        assert refused.value.code == 503
        assert json.load(refused.value)["database"].startswith("down: ")
        assert "Ready" not in output.text
    finally:
        everything = psutil.Process(process.pid).children(recursive=True)
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) == 0, output.text
        for leftover in everything:
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()
