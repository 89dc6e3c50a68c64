"""Faults under the real `manage.py serve --fake-worker`: its children killed with SIGKILL.

Each run has a Redis of its own (started by serve on a free port) and the test database. Bounds are
generous (a loaded 2-core machine): the point is that things come back, not how fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from conversations.models import Message
from tests.e2e.client import ChatClient
from tests.e2e.live import connection_holder, database_url, free_port, web_workers
from tests.test_serve import ENV, ROOT, Output, Served, gone, unused_redis_url

BACK_WITHIN_S = 90  # a killed child is restarted and answering again within this
WEB = "uvicorn chatbot.asgi"  # the web child's command line (chatbot/web.py)


@pytest.fixture
def serve_with(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Callable[..., Served]]:
    """Starts serve with extra environment; whatever a run leaves behind is killed afterwards."""
    runs: list[Served] = []

    def start(**env: str) -> Served:
        port = free_port()
        environment = {**ENV, "REDIS_URL": unused_redis_url(), "DATABASE_URL": database_url(), **env}
        command = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port), "--fake-worker"]
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        runs.append(Served(process, Output(process), f"http://127.0.0.1:{port}/"))
        return runs[-1]

    yield start
    for run in runs:
        leftovers = list(run.started)
        if run.process.poll() is None:
            leftovers += [psutil.Process(run.process.pid), *psutil.Process(run.process.pid).children(recursive=True)]
        for leftover in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()
        run.process.wait(10)


def child(run: Served, name: str, timeout: float = BACK_WITHIN_S) -> psutil.Process:
    """serve's child whose command line holds ``name``, waiting for one to be running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in psutil.Process(run.process.pid).children():
            with contextlib.suppress(psutil.NoSuchProcess):
                if name in " ".join(process.cmdline()) and not gone(process):
                    run.started.append(process)
                    return process
        time.sleep(0.05)
    raise AssertionError(f"no {name} running under serve:\n{run.output.text}")


def health(run: Served) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(run.url + "healthz", timeout=10) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as error:
        return dict(json.load(error))


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def answers(run: Served) -> bool:
    try:
        return health(run)["status"] == "ok"
    except OSError:
        return False


def ctrl_c_leaves_nothing(run: Served) -> None:
    everything = psutil.Process(run.process.pid).children(recursive=True)
    run.started += everything
    os.killpg(run.process.pid, signal.SIGINT)
    assert run.process.wait(timeout=60) == 0, run.output.text
    wait_until(lambda: all(gone(process) for process in everything), 10, "every process serve started gone")


def reply_status(message_id: int) -> str:
    return str(Message.objects.get(id=message_id).status)


async def kill_the_worker_mid_reply(run: Served) -> tuple[list[dict[str, Any]], str]:
    """A customer's reply streaming when the worker is killed: the frames its open socket got from
    the kill until the reply was done, and the worker's state /healthz gave right after the kill."""
    async with ChatClient(run.url.rstrip("/")) as chat:
        for attempt in range(5):
            worker = child(run, "inference_worker")
            exchange = await chat.ask(f"Question number {attempt}?", until="delta", timeout=BACK_WITHIN_S)
            reply_id = exchange.deltas[0]["message_id"]
            worker.suspend()  # frozen where it was, so the reply is still streaming when it dies
            if await asyncio.to_thread(reply_status, reply_id) == "streaming":
                break
            worker.resume()  # the short scripted reply finished first: ask again
            await chat.collect(exchange, until="done")
        else:
            raise AssertionError("the scripted reply always finished before the worker could be stopped")
        worker.kill()
        await asyncio.to_thread(
            wait_until, lambda: health(run)["worker"] != "online", 30, "the worker no longer said online"
        )
        state = (await asyncio.to_thread(health, run))["worker"]
        frames: list[dict[str, Any]] = []
        deadline = time.monotonic() + BACK_WITHIN_S
        while not any(f["type"] == "done" and f["message_id"] == reply_id for f in frames):
            frames.append(await chat.receive(timeout=max(deadline - time.monotonic(), 0.01)))
        return frames, state


@pytest.mark.django_db(transaction=True)
def test_it_restarts_a_worker_killed_mid_reply_while_the_web_and_the_customers_socket_stay_up(
    serve_with: Callable[..., Served],
) -> None:
    run = serve_with(SERVE_RESTART_BACKOFF_S="2")
    run.output.wait_for(f"Ready: {run.url}", timeout=120)
    web = child(run, WEB)

    frames, state_after_kill = asyncio.run(kill_the_worker_mid_reply(run))

    assert state_after_kill == "restarting"
    notices = [f for f in frames if f["type"] == "notice"]
    assert notices and notices[0]["code"] == "worker_restarting", frames
    assert notices[0]["detail"] == (
        "The assistant is restarting; your message is saved and will be answered in a moment."
    )
    assert frames[-1]["status"] == "complete" and frames[-1]["text"], frames
    run.output.wait_for("inference exited (killed by SIGKILL)", timeout=5)
    run.output.wait_for("restart 1 in 2.0 s", timeout=5)
    run.output.wait_for("The inference worker is back: the bot answers.", timeout=BACK_WITHIN_S)
    assert health(run)["worker"] == "online"
    assert child(run, WEB).pid == web.pid and web.is_running(), "the web process was restarted"
    assert "stopping the rest" not in run.output.text
    ctrl_c_leaves_nothing(run)


@pytest.mark.django_db(transaction=True)
def test_it_restarts_a_killed_web_process_and_the_site_answers_again(serve_with: Callable[..., Served]) -> None:
    run = serve_with(WEB_PROCESSES="2")
    run.output.wait_for(f"Ready: {run.url}", timeout=120)
    web, worker = child(run, WEB), child(run, "inference_worker")
    serving = web_workers(web.pid, port_of(run))
    assert len(serving) == 2, serving

    web.kill()  # uvicorn's supervisor: its worker processes are left without it
    run.output.wait_for("web exited (killed by SIGKILL)", timeout=10)
    wait_until(lambda: all(gone(process) for process in serving), 10, "serve stopped the orphaned web workers")
    wait_until(lambda: answers(run), BACK_WITHIN_S, "the site answered again")
    new_web = child(run, WEB)
    assert new_web.pid != web.pid
    wait_until(lambda: len(web_workers(new_web.pid, port_of(run))) == 2, 30, "two web processes again")
    assert child(run, "inference_worker").pid == worker.pid, "the worker was restarted with the web"
    ctrl_c_leaves_nothing(run)


@pytest.mark.django_db(transaction=True)
def test_a_killed_web_worker_process_is_replaced_by_uvicorn_while_the_port_keeps_serving(
    serve_with: Callable[..., Served],
) -> None:
    run = serve_with(WEB_PROCESSES="2")
    run.output.wait_for(f"Ready: {run.url}", timeout=120)
    port = port_of(run)
    web = child(run, WEB)
    wait_until(lambda: len(web_workers(web.pid, port)) == 2, 30, "two web processes")
    asyncio.run(chat_until_done(run))  # a chat before, on whichever process

    async def chat_across_the_kill() -> tuple[list[dict[str, Any]], int]:
        # A customer's socket on one worker process; the other is killed. The socket stays, the
        # chat goes on, and every request made while uvicorn brings a new process serves.
        async with ChatClient(run.url.rstrip("/")) as chat:
            holder = connection_holder(web_workers(web.pid, port), port, chat.socket.local_address[1])
            victim = next(process for process in web_workers(web.pid, port) if process.pid != holder.pid)
            victim.kill()
            await asyncio.to_thread(wait_until, lambda: gone(victim), 10, "the worker process died")
            served = 0
            while served < 5 or victim in web_workers(web.pid, port) or len(web_workers(web.pid, port)) < 2:
                assert await asyncio.to_thread(health, run), "a request failed while a web process was down"
                served += 1
                await asyncio.sleep(0.05)
            done = (await chat.ask("Still there?", timeout=BACK_WITHIN_S)).frames
            return done, served

    frames, served_meanwhile = asyncio.run(chat_across_the_kill())
    assert frames[-1]["type"] == "done" and frames[-1]["status"] == "complete", frames
    assert served_meanwhile >= 5
    replacement = web_workers(web.pid, port)
    assert len(replacement) == 2
    assert child(run, WEB).pid == web.pid, "serve restarted the whole web tier for one worker process"
    assert "web exited" not in run.output.text
    for _ in range(10):  # and both processes serve again: new visits, each a chat of its own
        asyncio.run(chat_until_done(run))
    ctrl_c_leaves_nothing(run)


def port_of(run: Served) -> int:
    return int(run.url.rstrip("/").rsplit(":", 1)[1])


async def chat_until_done(run: Served) -> None:
    async with ChatClient(run.url.rstrip("/")) as chat:
        exchange = await chat.ask("Hello?", timeout=BACK_WITHIN_S)
        assert exchange.done["status"] == "complete", exchange.frames


@pytest.mark.django_db(transaction=True)
def test_a_child_that_dies_at_once_again_and_again_is_restarted_after_growing_waits(
    serve_with: Callable[..., Served],
) -> None:
    run = serve_with(SERVE_RESTART_BACKOFF_S="0.3")
    waits = [0.3, 0.6, 1.2, 2.4]
    killed_at: list[float] = []
    seen_at: list[float] = []
    for _ in range(len(waits) + 1):
        worker = child(run, "inference_worker", timeout=60)
        seen_at.append(time.monotonic())
        if len(killed_at) == len(waits):
            break
        killed_at.append(time.monotonic())
        worker.kill()
        worker.wait(10)

    for number, wait in enumerate(waits, start=1):
        run.output.wait_for(f"restart {number} in {wait:.1f} s", timeout=5)
        assert seen_at[number] - killed_at[number - 1] >= wait, f"restart {number} came before its {wait} s wait"
    run.output.wait_for("inference keeps dying right after it starts", timeout=5)
    run.output.wait_for(f"Ready: {run.url}", timeout=BACK_WITHIN_S)  # left alone, it comes up
    ctrl_c_leaves_nothing(run)
