"""A running vLLM server measured with the engine bench's own jobs: stdlib only, no vLLM import.

Each job is one non-streamed ``POST /v1/completions`` with the prompt's token ids (so vLLM sees
exactly the engine's prompt), greedy, ``ignore_eos`` (vLLM's extension), ``max_tokens`` = the
job's length; ``concurrency`` jobs are in flight at once, from threads. Throughput is the tokens
vLLM reports in ``usage`` over the wall time from the first request sent to the last answer.
"""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def served_model(url: str) -> str:
    """The server's first (usually only) model, as ``/v1/models`` lists it."""
    with urllib.request.urlopen(f"{url.rstrip('/')}/v1/models", timeout=10) as response:
        return str(json.load(response)["data"][0]["id"])


def complete(url: str, model: str, prompt: tuple[int, ...], max_tokens: int) -> int:
    """One greedy completion of exactly ``max_tokens`` tokens; returns the tokens vLLM counted."""
    body = {
        "model": model,
        "prompt": list(prompt),
        "max_tokens": max_tokens,
        "min_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
    }
    request = urllib.request.Request(
        f"{url.rstrip('/')}/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return int(json.load(response)["usage"]["completion_tokens"])


def throughput(url: str, prompts: list[tuple[int, ...]], max_tokens: int) -> float:
    """Tokens/s with every prompt in flight at once."""
    model = served_model(url)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        tokens = sum(pool.map(lambda p: complete(url, model, p, max_tokens), prompts))
    return tokens / (time.perf_counter() - started)
