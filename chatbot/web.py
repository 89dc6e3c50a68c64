"""The web tier's command line: one place that says how the ASGI server runs, for `serve`, the
Dockerfile, compose, the live test systems and the benchmarks.

``WEB_SERVER`` picks the server: ``uvicorn`` (the default: uvloop and httptools, several processes
on one port) or ``daphne`` (Channels' own, one process). ``WEB_PROCESSES`` says how many processes
share the port (``0``, the default: one per core, at most ``WEB_PROCESSES_MAX``). Which process holds
a socket does not matter: every frame for a socket goes through the Redis channel layer, which
reaches the channel wherever it lives (docs/architecture.md, "The web tier").

    python -m chatbot.web [--host H] [--port P] [--processes N] [--server uvicorn|daphne]

runs the server in the foreground with those settings, as `serve` does.
"""

from __future__ import annotations

import argparse
import os
import sys

SERVERS = ("uvicorn", "daphne")
APPLICATION = "chatbot.asgi:application"


def _count_setting(name: str, default: int) -> int:
    """A whole number from the environment, ``default`` when unset or empty; a clear error otherwise."""
    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a whole number") from None
    if value < 0:
        raise ValueError(f"{name}={value}: expected 0 or more")
    return value


def default_processes(cores: int | None = None) -> int:
    """One web process per core, at most ``WEB_PROCESSES_MAX`` (default 8), at least one."""
    cores = cores if cores is not None else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0)
    cap = _count_setting("WEB_PROCESSES_MAX", 8)
    return max(1, min(cores or os.cpu_count() or 1, cap or 1))


def processes_setting() -> int:
    """``WEB_PROCESSES``, or one per core (``default_processes``) when it is 0 or unset."""
    return _count_setting("WEB_PROCESSES", 0) or default_processes()


def server_setting() -> str:
    server = os.environ.get("WEB_SERVER") or "uvicorn"
    if server not in SERVERS:
        raise ValueError(f"WEB_SERVER={server!r}: expected one of {', '.join(SERVERS)}")
    return server


def command(*, host: str, port: int, processes: int | None = None, server: str | None = None) -> list[str]:
    """The argv that serves the ASGI application on ``host:port`` with ``processes`` processes."""
    server = server or server_setting()
    if processes is not None and processes < 0:
        raise ValueError(f"{processes} web processes: expected 0 (the setting) or more")
    processes = processes or processes_setting()
    if server == "daphne":
        if processes != 1:
            raise ValueError(
                f"daphne serves from one process; WEB_PROCESSES={processes} needs WEB_SERVER=uvicorn "
                "(or WEB_PROCESSES=1)"
            )
        return [sys.executable, "-m", "daphne", "-b", host, "-p", str(port), APPLICATION]
    if server != "uvicorn":
        raise ValueError(f"unknown web server {server!r}: expected one of {', '.join(SERVERS)}")
    return [
        sys.executable,
        "-m",
        "uvicorn",
        APPLICATION,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(processes),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--ws",
        "websockets",
        # Frames are a few dozen bytes of JSON: compressing each cost more CPU than it saved bytes
        # (daphne does not compress either).
        "--ws-per-message-deflate",
        "false",
        "--lifespan",
        "off",
        "--no-access-log",
        # The client's address is read from X-Forwarded-For by our own rule (TRUSTED_PROXIES,
        # conversations/limits.py), never rewritten by the server before that.
        "--no-proxy-headers",
        "--no-server-header",
        "--timeout-graceful-shutdown",
        "5",
    ]


def describe(*, processes: int | None = None, server: str | None = None) -> str:
    """What ``command`` runs, in words: e.g. "uvicorn, 4 processes"."""
    server = server or server_setting()
    processes = processes or processes_setting()
    return f"{server}, {processes} process{'es' if processes != 1 else ''}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the web tier (the ASGI server) in the foreground.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--processes", type=int, default=0, help="default: WEB_PROCESSES (0: one per core)")
    parser.add_argument("--server", choices=SERVERS, default=None, help="default: WEB_SERVER (uvicorn)")
    args = parser.parse_args(argv)
    try:
        argv_out = command(host=args.host, port=args.port, processes=args.processes or None, server=args.server)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: {error}\n")
    os.execv(argv_out[0], argv_out)


if __name__ == "__main__":
    main()
