"""Chat under stress, measured. Run by hand, never in CI; loopback only, bounded in count and time.

    .venv/bin/python bench/chaos.py training [--chats 12] [--max-new-tokens 48] [--priority idle]

``training``: chat with the real model (daphne + the real inference worker, a customer over the
websocket) idle, then while a real Celery worker trains a LoRA run on corrected conversations and
evaluates it; and the same run's time with no chat beside it. Prints one ``name=value`` line per
figure and the ratios against this run's idle baseline. Targets: during training and evaluation
chat tokens/s >= 50 % of idle, first token p95 <= 1 s, no reply timeout.

Everything runs on a scratch SQLite database, the local Redis under a key prefix of its own, and a
redis-server of the bench's own as the Celery broker, so a running `make run` is not disturbed.
Further subcommands (faults injected in a loop while customers chat) go beside ``training``.
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
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTIONS = [
    "Hello! Can you tell me how to return a pair of shoes?",
    "What is a good way to keep my account secure?",
    "Write a few sentences about why customer service matters.",
    "How long does shipping usually take?",
]
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
            "CHAT_RATE_LIMIT_MESSAGES": "10000",
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
    from finetuning import services

    return services.run_start(config=RUN_CONFIG, snapshot=snapshot)


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
    args = parser.parse_args()
    {"training": training}[args.command](args)


if __name__ == "__main__":
    main()
