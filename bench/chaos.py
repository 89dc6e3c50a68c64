"""Chat under stress, measured. Run by hand, never in CI; loopback only, bounded in count and time.

    .venv/bin/python bench/chaos.py training [--chats 12] [--max-new-tokens 48] [--priority idle]
    .venv/bin/python bench/chaos.py faults [--customers 8] [--rounds 8] [--database-url URL]

``training``: chat with the real model (daphne + the real inference worker, a customer over the
websocket) idle, then while a real Celery worker trains a LoRA run on corrected conversations and
evaluates it; and the same run's time with no chat beside it. Prints one ``name=value`` line per
figure and the ratios against this run's idle baseline. Targets: during training and evaluation
chat tokens/s >= 50 % of idle, first token p95 <= 1 s, no reply timeout.

``faults``: the whole system as ``make run`` serves it (``manage.py serve --fake-worker``, with the
redis-server it starts itself), N customers chatting as browsers do (reconnect with backoff, resend
what was not confirmed, same client id), while faults are injected in a loop: the inference worker
killed -9 mid-reply, Redis killed -9 (serve restarts it empty), the database unavailable for a
while, the web process killed -9. Prints faults injected, messages sent, lost (must be 0), replies
stuck pending or streaming after the settle time (must be 0), and the recovery time (from the end
of a fault to the next reply answered) p50/p95, per fault and overall. The scripted worker makes
the model cost nothing: the figures are the system's.

Everything runs on a scratch database (SQLite unless ``--database-url`` names a scratch
PostgreSQL database) and Redis servers of the bench's own, so a running `make run` is not disturbed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.chat_latency import QUESTIONS  # noqa: E402
from tests.e2e.live import LOOPBACK_LIMITS  # noqa: E402

RUN_CONFIG = {"epochs": 1, "batch_size": 4, "max_seq_len": 192, "checkpoint_every": 1000}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Reply:
    phase: str  # what the training run was doing when the question was sent ("idle" without one)
    first_token_s: float
    tokens_per_s: float
    timed_out: bool


class System:
    """daphne, the inference worker, the broker, and (on demand) a Celery worker, on one scratch
    database; this process is configured to use the same one."""

    def __init__(self, args: argparse.Namespace, scratch: Path) -> None:
        self.scratch, self.processes = scratch, []
        self.log = open(scratch / "system.log", "wb")  # noqa: SIM115 - lives as long as the system
        broker_port, self.port = free_port(), free_port()
        prefix = f"chaos-{uuid.uuid4().hex[:6]}"
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{scratch / 'chaos.sqlite3'}",
            "REDIS_KEY_PREFIX": prefix,
            "CHANNEL_PREFIX": prefix,
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{broker_port}/0",
            "ADAPTERS_DIR": str(scratch / "adapters"),
            "FINETUNING_CHECKPOINTS_DIR": str(scratch / "checkpoints"),
            "FINETUNING_GENERAL_EXAMPLES": "8",
            "FINETUNING_EVAL_MAX_REPLAYS": "4",
            "FINETUNING_EVAL_MAX_NEW_TOKENS": "16",
            "FINETUNING_CPU_PRIORITY": args.priority,
            "FINETUNING_THREADS": str(args.training_threads),
            "GENERATION_TEMPERATURE": "0",
            "GENERATION_MAX_NEW_TOKENS": str(args.max_new_tokens),
            "INFERENCE_THREADS": str(args.inference_threads),
            **LOOPBACK_LIMITS,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
        }
        os.environ.update(self.env)
        self.spawn(["redis-server", "--port", str(broker_port), "--save", "", "--appendonly", "no"])
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=self.env, check=True)
        self.spawn([sys.executable, "-m", "daphne", "-p", str(self.port), "chatbot.asgi:application"])
        self.spawn([sys.executable, "manage.py", "inference_worker", "--consumer", prefix])
        self.url = f"http://127.0.0.1:{self.port}"
        self.wait_for_worker()

    def spawn(self, command: list[str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=self.log, stderr=self.log)
        self.processes.append(process)
        return process

    def wait_for_worker(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                    if json.load(response).get("worker_online"):
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise SystemExit(f"the system did not come up; see {self.scratch / 'system.log'}")

    def start_celery(self) -> None:
        command = [sys.executable, "-m", "celery", "-A", "chatbot", "worker", "-Q", "finetuning", "-P", "solo"]
        self.spawn(command + ["-l", "info", "--without-gossip", "--without-mingle", "--without-heartbeat"])

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def setup_django() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
    django.setup()


def import_corrected_conversations(count: int) -> None:
    from conversations.transcripts import import_jsonl
    from tests.finetuning.shop import transcripts

    report = import_jsonl(json.dumps(record) for record in transcripts("ada")[:count])
    assert report.imported and not report.errors, report.errors


def current_phase(run_id: int | None) -> str:
    if run_id is None:
        return "idle"
    from finetuning.models import TrainingRun

    run = TrainingRun.objects.filter(id=run_id).values("status", "phase").first()
    if run is None or run["status"] not in TrainingRun.ACTIVE_STATUSES:
        return "finished"
    return run["phase"] or run["status"]


async def ask(url: str, question: str, tokenizer: Any, phase: str, timeout: float) -> Reply:
    from tests.e2e.client import ChatClient

    async with ChatClient(url) as chat:
        try:
            exchange = await chat.ask(question, timeout=timeout)
        except TimeoutError:
            return Reply(phase, float("nan"), 0.0, True)
    done = exchange.done
    if done.get("status") != "complete" or not exchange.first_delta_at or not exchange.done_at:
        return Reply(phase, float("nan"), 0.0, True)
    tokens = len(tokenizer.encode(done["text"]))
    decode_s = max(exchange.done_at - exchange.first_delta_at, 1e-3)
    return Reply(phase, exchange.first_delta_at - exchange.sent_at, tokens / decode_s, False)


def chat_while(url: str, tokenizer: Any, *, run_id: int | None, count: int, deadline: float) -> list[Reply]:
    """Questions one after another (one customer), up to ``count`` or while the run is going."""
    replies: list[Reply] = []
    asyncio.run(ask(url, QUESTIONS[0], tokenizer, "warm-up", 300))
    while len(replies) < count and time.monotonic() < deadline:
        phase = current_phase(run_id)
        if phase == "finished":
            break
        if run_id is not None and phase in {"queued", "running", "building"}:
            time.sleep(0.5)  # the figures are for training and evaluation
            continue
        question = QUESTIONS[len(replies) % len(QUESTIONS)]
        replies.append(asyncio.run(ask(url, question, tokenizer, phase, 180)))
    return replies


def run_training(*, snapshot: Any = None) -> Any:
    from finetuning import services, tasks

    return services.run_start(config=RUN_CONFIG, snapshot=snapshot, enqueue=tasks.training_run.delay_on_commit)


def wait_run(run_id: int, deadline: float) -> Any:
    from finetuning.models import TrainingRun

    while time.monotonic() < deadline:
        run = TrainingRun.objects.select_related("version").get(id=run_id)
        if run.status not in TrainingRun.ACTIVE_STATUSES:
            return run
        time.sleep(1)
    raise SystemExit(f"training run {run_id} did not finish in time")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def figures(name: str, replies: list[Reply]) -> dict[str, float]:
    ok = [r for r in replies if not r.timed_out]
    result = {
        f"{name}_replies": float(len(replies)),
        f"{name}_timeouts": float(len(replies) - len(ok)),
        f"{name}_tokens_per_s": statistics.median(r.tokens_per_s for r in ok) if ok else 0.0,
        f"{name}_first_token_p50_s": percentile([r.first_token_s for r in ok], 0.5),
        f"{name}_first_token_p95_s": percentile([r.first_token_s for r in ok], 0.95),
    }
    for key, value in result.items():
        print(f"{key}={value:.3f}" if not key.endswith(("_replies", "_timeouts")) else f"{key}={value:.0f}")
    return result


def run_seconds(run: Any) -> float:
    return (run.finished_at - run.started_at).total_seconds()


def training(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        system = System(args, Path(folder))
        try:
            setup_django()
            from finetuning.base import base_model_path, load_tokenizer

            tokenizer = load_tokenizer(base_model_path())
            import_corrected_conversations(args.conversations)
            deadline = time.monotonic() + args.max_minutes * 60
            idle = figures("idle", chat_while(system.url, tokenizer, run_id=None, count=args.chats, deadline=deadline))

            system.start_celery()
            alone = wait_run(run_training().id, deadline)  # training alone, and the dataset it built
            assert alone.status == "succeeded", alone.error
            beside = run_training(snapshot=alone.snapshot)
            busy = chat_while(system.url, tokenizer, run_id=beside.id, count=10**6, deadline=deadline)
            beside = wait_run(beside.id, deadline)
            assert beside.status == "succeeded", beside.error
        finally:
            system.stop()
    during = figures("during", busy)
    for phase in ("training", "evaluating"):
        figures(phase, [r for r in busy if r.phase == phase])
    print(f"training_alone_s={run_seconds(alone):.1f}")
    print(f"training_beside_chat_s={run_seconds(beside):.1f}")
    ratio = during["during_tokens_per_s"] / idle["idle_tokens_per_s"] if idle["idle_tokens_per_s"] else 0.0
    print(f"ratio_tokens_per_s_during_vs_idle={ratio:.2f}")
    p95_ratio = during["during_first_token_p95_s"] / idle["idle_first_token_p95_s"]
    print(f"ratio_first_token_p95_during_vs_idle={p95_ratio:.2f}")
    print(f"ratio_training_beside_chat_vs_alone={run_seconds(beside) / run_seconds(alone):.2f}")
    met = ratio >= 0.5 and during["during_first_token_p95_s"] <= 1.0 and during["during_timeouts"] == 0
    print(f"targets_met={'yes' if met else 'no'}")


# The faults part: customers as browsers, faults in a loop, under `manage.py serve`.

FAULTS = ("worker", "redis", "database", "web")
FAULT_CHILD = {"worker": "inference_worker", "redis": "redis-server", "web": "daphne"}


@dataclass
class Customer:
    """One browser: what it typed and has not seen confirmed is resent after each reconnect."""

    index: int
    sent: set[str]
    unconfirmed: dict[str, str]
    answered: int = 0
    failed: int = 0
    reconnects: int = 0


class Served:
    """`manage.py serve --fake-worker` on a free port, with a Redis of its own that serve starts."""

    def __init__(self, scratch: Path, database_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        prefix = f"chaos-{uuid.uuid4().hex[:6]}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "REDIS_KEY_PREFIX": prefix,
            "CHANNEL_PREFIX": prefix,
            **LOOPBACK_LIMITS,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "INFERENCE_REQUEUE_AFTER_S": "5",
            "PYTHONUNBUFFERED": "1",
        }
        self.log = open(scratch / "serve.log", "wb")  # noqa: SIM115 - lives as long as serve
        command = [sys.executable, "manage.py", "serve", "--port", str(self.port), "--fake-worker"]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.wait_healthy(300)

    def health(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                return dict(json.load(response))
        except urllib.error.HTTPError as error:
            return dict(json.load(error))
        except (OSError, ValueError):
            return {"status": "unreachable"}

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.health().get("status") != "ok":
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve did not come up; see {self.log.name}")
            time.sleep(0.2)

    def kill_child(self, marker: str) -> None:
        """kill -9 the child of serve whose command line holds ``marker``; serve restarts it."""
        import psutil

        for child in psutil.Process(self.process.pid).children():
            if any(marker in part for part in child.cmdline()):
                child.kill()
                return
        raise RuntimeError(f"serve has no child running {marker}")

    def stop(self) -> None:
        import signal

        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


async def browse(url: str, customer: Customer, stop: asyncio.Event, question_every_s: float) -> None:
    """Chat until ``stop``: one question at a time, each answered (or failed) before the next."""
    from tests.e2e.client import ChatClient

    backoff = 0.5
    cookie: str | None = None
    while not stop.is_set():
        try:
            async with ChatClient(url, cookie) as chat:
                cookie, backoff = chat.cookie, 0.5
                stored = {m.get("client_id") for m in chat.history.get("messages", [])}
                for client_id in [c for c in customer.unconfirmed if c in stored]:
                    del customer.unconfirmed[client_id]
                while not stop.is_set():
                    await converse(chat, customer)
                    await asyncio.sleep(question_every_s)
        except Exception:  # the socket dropped, the page did not load, a reply never came: reconnect
            customer.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 4.0)


async def converse(chat: Any, customer: Customer) -> None:
    """Send the oldest unconfirmed text again, or a new question; wait for its reply's end."""
    if customer.unconfirmed:
        client_id, text = next(iter(customer.unconfirmed.items()))
    else:
        client_id = f"chaos-{customer.index}-{len(customer.sent)}"
        text = f"Question {len(customer.sent)} from customer {customer.index}: where is my order?"
        customer.unconfirmed[client_id] = text
    customer.sent.add(client_id)
    await chat.send({"type": "message", "text": text, "client_id": client_id})
    while True:
        frame = await chat.receive(timeout=60)
        if frame["type"] == "message" and frame["message"].get("client_id") == client_id:
            customer.unconfirmed.pop(client_id, None)
        elif frame["type"] == "error" and frame.get("code") == "reply_in_progress":
            await asyncio.sleep(0.5)  # the previous reply was restarted after a fault: wait for it
            return
        elif frame["type"] == "done":
            if client_id in customer.unconfirmed:
                continue  # the end of an earlier reply, restarted after a fault
            customer.answered += frame["status"] == "complete"
            customer.failed += frame["status"] == "failed"
            return


async def probe(url: str, timeout: float) -> float:
    """Seconds until a new customer's question is answered, reconnecting as a browser does."""
    from tests.e2e.client import ChatClient

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            async with ChatClient(url) as chat:
                done = (await chat.ask("are you there?", timeout=10)).done
                if done.get("status") == "complete":
                    return time.monotonic() - started
        except Exception:
            pass
        await asyncio.sleep(0.2)
    return float("inf")


def inject(fault: str, served: Served, outage: Any, database_down_s: float) -> None:
    """Cause ``fault``; returns when it is over (a kill at once, an outage after its time)."""
    if fault == "database":
        outage.during(database_down_s)
    else:
        served.kill_child(FAULT_CHILD[fault])


async def chaos_loop(
    args: argparse.Namespace, served: Served, outage: Any
) -> tuple[list[Customer], dict[str, list[float]]]:
    stop = asyncio.Event()
    customers = [Customer(i, set(), {}) for i in range(args.customers)]
    browsers = [asyncio.create_task(browse(served.url, c, stop, args.question_every_s)) for c in customers]
    recovery: dict[str, list[float]] = {fault: [] for fault in FAULTS}
    await asyncio.sleep(args.warm_up_s)
    for round_ in range(args.rounds):
        fault = args.faults[round_ % len(args.faults)]
        await asyncio.to_thread(inject, fault, served, outage, args.database_down_s)
        seconds = await probe(served.url, args.recover_within_s)
        recovery[fault].append(seconds)
        print(f"# fault {round_ + 1}: {fault}, answered again after {seconds:.1f} s", flush=True)
        await asyncio.sleep(args.between_s)
    stop.set()
    await asyncio.gather(*browsers, return_exceptions=True)
    return customers, recovery


def settle(timeout: float) -> int:
    """Bot replies still pending or streaming once ``timeout`` has passed with nothing new injected."""
    from conversations.models import Message

    deadline = time.monotonic() + timeout
    while True:
        active = Message.objects.filter(role=Message.Role.BOT, status__in=Message.ACTIVE_STATUSES).count()
        if not active or time.monotonic() > deadline:
            return active
        time.sleep(1)


def faults(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        os.environ["DATABASE_URL"] = args.database_url or f"sqlite:///{scratch / 'chaos.sqlite3'}"
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
        setup_django()
        from tests.faults.tools import DatabaseOutage

        outage = DatabaseOutage()  # on PostgreSQL, serve reaches the database through its proxy
        served = Served(scratch, outage.env.get("DATABASE_URL", os.environ["DATABASE_URL"]))
        try:
            customers, recovery = asyncio.run(chaos_loop(args, served, outage))
            stuck = settle(args.settle_s)
        finally:
            served.stop()
            outage.close()
        from conversations.models import Message

        stored = set(
            Message.objects.filter(role=Message.Role.CUSTOMER, client_id__isnull=False).values_list(
                "client_id", flat=True
            )
        )
    sent = set().union(*(c.sent for c in customers))
    every = [s for values in recovery.values() for s in values]
    print(f"faults_injected={len(every)}")
    for fault, values in recovery.items():
        if values:
            print(f"recovery_{fault}_p50_s={percentile(values, 0.5):.1f}")
            print(f"recovery_{fault}_max_s={max(values):.1f}")
    print(f"customers={len(customers)}")
    print(f"messages_sent={len(sent)}")
    print(f"replies_answered={sum(c.answered for c in customers)}")
    print(f"replies_failed={sum(c.failed for c in customers)}")
    print(f"reconnects={sum(c.reconnects for c in customers)}")
    print(f"messages_lost={len(sent - stored)}")
    print(f"replies_stuck={stuck}")
    print(f"recovery_p50_s={percentile(every, 0.5):.1f}")
    print(f"recovery_p95_s={percentile(every, 0.95):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("training", help="chat idle versus during a training run and its evaluation")
    train.add_argument("--chats", type=int, default=8, help="questions asked for the idle baseline")
    train.add_argument("--conversations", type=int, default=20, help="corrected conversations to train on")
    train.add_argument("--max-new-tokens", type=int, default=48)
    train.add_argument("--inference-threads", type=int, default=2)
    train.add_argument("--training-threads", type=int, default=1)
    train.add_argument("--priority", choices=["idle", "nice", "normal"], default="idle")
    train.add_argument("--max-minutes", type=float, default=25, help="the whole bench stops by then")
    chaos = commands.add_parser("faults", help="customers chatting while faults are injected in a loop")
    chaos.add_argument("--customers", type=int, default=8)
    chaos.add_argument("--rounds", type=int, default=8, help="faults injected, one after another")
    chaos.add_argument("--faults", type=lambda v: v.split(","), default=list(FAULTS), help="e.g. worker,redis")
    chaos.add_argument("--database-down-s", type=float, default=10.0)
    chaos.add_argument("--between-s", type=float, default=5.0, help="chat without faults between two")
    chaos.add_argument("--question-every-s", type=float, default=0.5, help="a customer's pause between questions")
    chaos.add_argument("--warm-up-s", type=float, default=5.0)
    chaos.add_argument("--recover-within-s", type=float, default=120.0, help="a probe gives up after this")
    chaos.add_argument("--settle-s", type=float, default=90.0, help="wait this long for replies to end")
    chaos.add_argument("--database-url", default="", help="a scratch PostgreSQL database (default: SQLite)")
    args = parser.parse_args()
    {"training": training, "faults": faults}[args.command](args)


if __name__ == "__main__":
    main()
