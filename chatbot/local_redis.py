"""A Redis for one machine: start `redis-server` when none answers on REDIS_URL, stop it after.

`python manage.py serve` uses it, and so does `make test`, through this module's command line:

    python -m chatbot.local_redis -- python -m pytest

runs the command with a Redis on REDIS_URL: the one already answering there, or a throwaway
redis-server that is stopped when the command ends.

It also holds how serve starts and stops its processes: each in a session (so a process group) of
its own, stopped as a whole group, so that nothing a process spawned (a Celery worker's pool
children) outlives it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlparse

import redis

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
STOP_TIMEOUT_S = 10.0
START_TIMEOUT_S = 10.0


class RedisUnavailable(Exception):
    """No Redis answers and none can be started here; the message is one line for the user."""


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether a Redis answers PING on ``url`` within ``timeout`` seconds (to connect and to reply)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):  # refused, unreachable, timed out, unknown host, bad password
        return False
    finally:
        client.close()


def start_if_needed(
    url: str, *, say: Callable[[str], object] = print, **options: Any
) -> subprocess.Popen[bytes] | None:
    """None when a Redis answers on ``url``; else a redis-server started for it (stop it with stop()).

    Raises RedisUnavailable when none can be started: ``url`` is not on this machine, redis-server is
    not installed, or it does not come up. ``options`` go to subprocess.Popen.
    """
    if answers(url):
        return None
    where = urlparse(url)
    if where.scheme != "redis" or where.hostname not in LOCAL_HOSTS:
        raise RedisUnavailable(
            f"No Redis answers on {url}, which is not on this machine: start that one, or point REDIS_URL "
            "at a running Redis (or at redis://127.0.0.1:6379/0 with redis-server installed)."
        )
    server = shutil.which("redis-server")
    if server is None:
        raise RedisUnavailable(
            f"No Redis answers on {url} and redis-server is not installed: install it "
            "(apt-get install redis-server) or point REDIS_URL at a running Redis."
        )
    port = where.port or 6379
    command = server_command(url, server)
    say(f"Starting redis-server on {command[4]} port {port} (none answers on {url})...")
    process = spawn(command, **options)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not answers(url, timeout=0.5):
        if process.poll() is not None:
            raise RedisUnavailable(
                f"redis-server exited with status {process.returncode}: is something else listening on port {port}?"
            )
        if time.monotonic() > deadline:
            stop([process])
            raise RedisUnavailable(f"redis-server did not answer on {url} within {START_TIMEOUT_S:.0f} s.")
        time.sleep(0.1)
    return process


def server_command(url: str, server: str = "redis-server") -> list[str]:
    """The redis-server command line for a throwaway Redis on ``url`` (nothing kept on disk); serve
    runs it again when the one it started dies."""
    where = urlparse(url)
    bind = "::1" if where.hostname == "::1" else "127.0.0.1"
    command = [server, "--port", str(where.port or 6379), "--bind", bind, "--save", "", "--appendonly", "no"]
    return command + ["--loglevel", "warning"] + (["--requirepass", where.password] if where.password else [])


def spawn(command: Sequence[str], **options: Any) -> subprocess.Popen[bytes]:
    """Start ``command`` in a session of its own: a terminal's Ctrl-C reaches only whoever started it,
    who stops the process and all it spawned with stop()."""
    return subprocess.Popen(list(command), start_new_session=True, **options)


def stop(processes: Sequence[subprocess.Popen[bytes]], timeout: float = STOP_TIMEOUT_S) -> None:
    """Ctrl-C each process group (as a terminal would), wait up to ``timeout`` s for the processes to
    finish, then kill what is left of each group (a Celery worker's pool children among them)."""
    for process in processes:
        if process.poll() is None:
            _signal_group(process, signal.SIGINT)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            pass
    for process in processes:
        _signal_group(process, signal.SIGKILL)
        process.wait()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # spawn() made the process the leader of its group
    except (ProcessLookupError, PermissionError):  # the whole group has already gone
        pass


def main(argv: Sequence[str]) -> int:
    """``python -m chatbot.local_redis -- COMMAND...``: run COMMAND with a Redis on REDIS_URL."""
    command = list(argv[1:] if argv[:1] == ["--"] else argv)
    if not command:
        print("usage: python -m chatbot.local_redis -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
    from django.conf import settings

    url = settings.REDIS_URL
    try:
        server = start_if_needed(url, say=lambda line: print(f"==> {line}", flush=True))
    except RedisUnavailable as error:
        print(error, file=sys.stderr)
        return 1
    try:
        child = subprocess.Popen(command, env={**os.environ, "REDIS_URL": url})

        # A terminal's Ctrl-C reaches the command too (same process group): wait for it to finish,
        # then stop the Redis. Other signals are passed on to it.
        def forward(signum: int, _frame: object) -> None:
            if signum != signal.SIGINT:
                child.send_signal(signum)

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, forward)
        status = child.wait()
    finally:
        if server is not None:
            stop([server])
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
