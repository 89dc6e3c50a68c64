"""Time to first token and tokens/s of one chat through the websocket, against the same model
called directly in this process (the baseline), in one run. Run by hand, not in CI:

    .venv/bin/python bench/chat_latency.py [--rounds 5] [--max-new-tokens 64] [--threads 2]

It starts its own daphne and inference worker on a scratch SQLite database and the local Redis
(under a key prefix of its own), so a running `make run` is not disturbed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.client import ChatClient  # noqa: E402
from tests.e2e.live import LOOPBACK_LIMITS  # noqa: E402

QUESTIONS = [
    "Hello! Can you tell me how to return a pair of shoes?",
    "What is a good way to keep my account secure?",
    "Write a few sentences about why customer service matters.",
]


def start_system(args: argparse.Namespace, scratch: Path) -> tuple[str, list[subprocess.Popen[bytes]]]:
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{scratch / 'bench.sqlite3'}",
        "REDIS_KEY_PREFIX": prefix,
        "CHANNEL_PREFIX": prefix,
        "GENERATION_TEMPERATURE": "0",
        "GENERATION_MAX_NEW_TOKENS": str(args.max_new_tokens),
        "INFERENCE_THREADS": str(args.threads),
        **LOOPBACK_LIMITS,
    }
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    log = open(scratch / "system.log", "wb")  # noqa: SIM115
    port = 8700 + os.getpid() % 200
    processes = [
        subprocess.Popen(
            [python, "-m", "daphne", "-p", str(port), "chatbot.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
        ),
        subprocess.Popen(
            [python, "manage.py", "inference_worker", "--consumer", prefix], cwd=ROOT, env=env, stdout=log, stderr=log
        ),
    ]
    url = f"http://127.0.0.1:{port}"
    import json
    import urllib.request

    for _ in range(600):
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
                if json.load(response)["worker_online"]:
                    return url, processes
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the system did not come up; see {scratch / 'system.log'}")


async def through_websocket(url: str, rounds: int) -> list[tuple[float, float, str]]:
    results = []
    for i in range(rounds + 1):  # the first round warms up
        async with ChatClient(url) as chat:
            exchange = await chat.ask(QUESTIONS[i % len(QUESTIONS)])
        assert exchange.first_delta_at and exchange.done_at
        if i:
            results.append(
                (
                    exchange.first_delta_at - exchange.sent_at,
                    exchange.done_at - exchange.first_delta_at,
                    exchange.done["text"],
                )
            )
    return results


def direct_generate(rounds: int, args: argparse.Namespace) -> tuple[list[tuple[float, float, int]], object]:
    """The same model, prompt and greedy decoding through transformers' generate with a streamer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

    from conversations.inference.model_store import resolve_base_model

    torch.set_num_threads(args.threads)
    folder = resolve_base_model("", ROOT / ".cache" / "models")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    results = []
    for i in range(rounds + 1):
        chat = [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
        started = time.perf_counter()
        output: list[torch.Tensor] = []

        def run(ids: dict = ids, streamer: TextIteratorStreamer = streamer, output: list = output) -> None:
            with torch.no_grad():
                output.append(
                    model.generate(**ids, max_new_tokens=args.max_new_tokens, do_sample=False, streamer=streamer)
                )

        thread = threading.Thread(target=run)
        thread.start()
        first = None
        for piece in streamer:
            if piece and first is None:
                first = time.perf_counter()
        thread.join()
        finished = time.perf_counter()
        tokens = output[0].shape[1] - ids["input_ids"].shape[1]
        if i:
            results.append(((first or finished) - started, finished - (first or finished), tokens))
    return results, tokenizer


def summarize(name: str, results: list[tuple[float, float, int]]) -> tuple[float, float]:
    ttft = statistics.median(r[0] for r in results)
    rate = statistics.median(r[2] / r[1] for r in results if r[1] > 0)
    print(f"{name:<22} ttft p50 {ttft * 1000:7.1f} ms   decode {rate:6.1f} tokens/s   ({len(results)} rounds)")
    return ttft, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        url, processes = start_system(args, Path(scratch))
        try:
            socket_results = asyncio.run(through_websocket(url, args.rounds))
        finally:
            for process in processes:
                process.terminate()
                process.wait(15)
    direct_results, tokenizer = direct_generate(args.rounds, args)
    socket_results = [(ttft, decode, len(tokenizer.encode(text))) for ttft, decode, text in socket_results]
    socket_ttft, socket_rate = summarize("websocket (system)", socket_results)
    direct_ttft, direct_rate = summarize("direct generate", direct_results)
    print(f"ttft_overhead_ms={1000 * (socket_ttft - direct_ttft):.1f}")
    print(f"websocket_vs_direct_tokens_per_s={socket_rate / direct_rate:.2f}")


if __name__ == "__main__":
    main()
