"""Faults a test (or a benchmark) causes on purpose: a Redis of its own to restart, the database
made unavailable for a while. Each helper is a real thing: a redis-server process, a lock on the
SQLite file, a TCP proxy in front of PostgreSQL that cuts and refuses connections."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

from chatbot import local_redis
from tests.e2e.live import database_url, free_port


class RedisServer:
    """A throwaway ``redis-server`` on a free port, nothing saved to disk: ``restart()`` brings it
    back empty, as a Redis restarted without persistence does (streams, groups, keys all gone)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not local_redis.answers(self.url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)
        return process

    def kill(self) -> None:
        """kill -9: every client's connection drops at once."""
        self.process.kill()
        self.process.wait(10)

    def restart(self, down_s: float = 0.0) -> None:
        """Kill it, stay down ``down_s`` seconds, start it again empty on the same port."""
        self.kill()
        time.sleep(down_s)
        self.process = self._start()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill()


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``. ``cut()`` drops every open connection and refuses
    (accepts and closes at once) new ones until ``restore()``: a database that went away."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.refusing = threading.Event()
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="tcp-proxy").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if self.refusing.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.open |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for side in (source, sink):
            self._drop(side)

    def _drop(self, side: socket.socket) -> None:
        with self.lock:
            self.open.discard(side)
        with contextlib.suppress(OSError):
            side.shutdown(socket.SHUT_RDWR)
        side.close()

    def cut(self) -> None:
        self.refusing.set()
        with self.lock:
            sockets = list(self.open)
        for side in sockets:
            self._drop(side)

    def restore(self) -> None:
        self.refusing.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


class DatabaseOutage:
    """The test database made unavailable to a live system for a while, on either engine.

    On PostgreSQL the system must reach the database through this outage's proxy: start it with
    ``LiveSystem(env=outage.env)``; ``during(seconds)`` then cuts and refuses its connections.
    On SQLite ``env`` is empty and ``during`` holds an exclusive lock on the database file, so
    every write waits out its busy timeout and fails ("database is locked").
    """

    def __init__(self) -> None:
        url = database_url()
        self.sqlite_path = url.removeprefix("sqlite:///") if url.startswith("sqlite:") else ""
        self.proxy: TcpProxy | None = None
        self.env: dict[str, str] = {}
        if not self.sqlite_path:
            parts = urlsplit(url)
            self.proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
            netloc = f"{parts.username}:{parts.password or ''}@127.0.0.1:{self.proxy.port}"
            self.env = {"DATABASE_URL": urlunsplit(parts._replace(netloc=netloc))}

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Unavailable inside the block."""
        if self.proxy is not None:
            self.proxy.cut()
            try:
                yield
            finally:
                self.proxy.restore()
            return
        lock = sqlite3.connect(self.sqlite_path, timeout=30, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            lock.execute("ROLLBACK")
            lock.close()

    def during(self, seconds: float) -> None:
        with self.down():
            time.sleep(seconds)

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
