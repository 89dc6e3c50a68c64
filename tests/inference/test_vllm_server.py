"""The vLLM client against the real vLLM server (one per session, the ``vllm_server`` fixture):
a reply streams in batches, Stop and a timeout make vLLM stop generating (its own metrics say
so), a trained peft adapter is served under its version's name and a broken one refused."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conversations.inference.types import GenerationRequest, SamplingParams
from conversations.inference.vllm import VllmEngine, VllmError
from tests.e2e.vllm import requests_running, wait_requests_running

from .test_vllm import Running

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def chat_prompt(tokenizer: Any) -> tuple[int, ...]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi! Who are you?"}], add_generation_prompt=True)
    return tuple(ids if isinstance(ids, list) else ids["input_ids"])


@pytest.fixture
def running(vllm_server: Any, tokenizer: Any) -> Iterator[Running]:
    run = Running(VllmEngine(vllm_server.url, tokenizer=tokenizer))
    yield run
    run.close()


def generated_total(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = re.findall(r"^vllm:generation_tokens_total\{[^}]*\} ([0-9.e+-]+)$", text, flags=re.MULTILINE)
    assert values, "vLLM's /metrics has no vllm:generation_tokens_total"
    return sum(float(v) for v in values)


def long_request(request_id: str, prompt: tuple[int, ...], **options: Any) -> GenerationRequest:
    sampling = SamplingParams(temperature=0, max_new_tokens=1500, ignore_eos=True)
    return GenerationRequest(request_id, prompt, sampling, **options)


def test_it_serves_the_servers_model_with_its_context(vllm_server: Any, running: Running) -> None:
    assert running.engine.model_name == "SmolLM2-135M-Instruct"
    assert running.engine.max_positions == 2048


def test_a_greedy_reply_streams_from_vllm_in_batches(
    vllm_server: Any, running: Running, chat_prompt: tuple[int, ...], tokenizer: Any
) -> None:
    sampling = SamplingParams(temperature=0, max_new_tokens=24)
    running.engine.submit(GenerationRequest("1", chat_prompt, sampling))
    done = running.wait_finished("1", timeout=120)
    assert done.finish_reason in ("stop", "length") and 0 < done.token_count <= 24
    text = running.text("1")
    assert text.strip() and len([c for c in running.chunks("1") if c.text]) >= 2, "it did not stream"
    # Greedy on the same prompt with the same penalty gives the same text: the prompt ids and the
    # sampling settings reach vLLM unchanged (without the penalty the text differs).
    body = {"model": running.engine.served_model, "prompt": list(chat_prompt), "max_tokens": 24, "temperature": 0}
    body["repetition_penalty"] = sampling.repetition_penalty
    again = httpx.post(f"{vllm_server.url}/v1/completions", json=body, timeout=120).json()
    assert again["choices"][0]["text"] == text


def test_stop_closes_the_stream_and_vllm_stops_generating_within_a_few_steps(
    vllm_server: Any, running: Running, chat_prompt: tuple[int, ...]
) -> None:
    before = generated_total(vllm_server.url)
    running.engine.submit(long_request("1", chat_prompt))
    deadline = time.monotonic() + 120
    while len(running.text("1")) < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert requests_running(vllm_server.url) == 1
    running.engine.cancel("1")
    done = running.wait_finished("1", timeout=5)
    assert done.finish_reason == "cancelled" and done.token_count < 1500
    assert wait_requests_running(vllm_server.url, 0, timeout=5) == 0, "vLLM still generates the stopped reply"
    after = generated_total(vllm_server.url)
    time.sleep(1.0)
    assert generated_total(vllm_server.url) == after, "vLLM went on generating after Stop"
    # The tokens vLLM generated that the reply never got: those of the last tick, plus the steps
    # between the stream closing and vLLM noticing.
    unseen = after - before - done.token_count
    print(f"vllm_tokens_after_stop={unseen:.0f} of {after - before:.0f}")
    assert unseen <= 8, f"vLLM generated {unseen:.0f} tokens after Stop"


def test_a_timeout_ends_the_reply_and_vllm_stops_it(
    vllm_server: Any, running: Running, chat_prompt: tuple[int, ...]
) -> None:
    running.engine.submit(long_request("1", chat_prompt, timeout_s=3.0))
    done = running.wait_finished("1", timeout=60)
    assert done.finish_reason == "timeout" and done.token_count < 1500
    assert wait_requests_running(vllm_server.url, 0, timeout=5) == 0


def served_models(url: str) -> set[str]:
    return {m["id"] for m in httpx.get(f"{url}/v1/models", timeout=10).json()["data"]}


def test_a_trained_adapter_serves_under_its_version_name_and_a_broken_one_is_refused(
    vllm_server: Any, running: Running, chat_prompt: tuple[int, ...], trained_adapter: Path, tmp_path: Path
) -> None:
    engine = running.engine
    engine.load_adapter("v-tiny", trained_adapter)
    try:
        assert "v-tiny" in served_models(vllm_server.url)
        engine.load_adapter("v-tiny", trained_adapter)  # another worker's load: served as it is
        engine.submit(GenerationRequest("1", chat_prompt, SamplingParams(temperature=0, max_new_tokens=8), "v-tiny"))
        engine.submit(GenerationRequest("2", chat_prompt, SamplingParams(temperature=0, max_new_tokens=8), "v-none"))
        assert running.wait_finished("1", timeout=120).finish_reason in ("stop", "length")
        assert running.text("1").strip()
        refused = running.wait_finished("2", timeout=30)
        assert refused.finish_reason == "error" and "v-none" in (refused.error or "")
        (tmp_path / "broken").mkdir()
        with pytest.raises(VllmError, match="v-broken.*No adapter found"):
            engine.load_adapter("v-broken", tmp_path / "broken")
    finally:
        engine.unload_adapter("v-tiny")
    assert "v-tiny" not in served_models(vllm_server.url)


def test_several_clients_share_one_server(vllm_server: Any, tokenizer: Any, chat_prompt: tuple[int, ...]) -> None:
    """Two workers' engines on one server, each with its own requests."""
    first, second = (Running(VllmEngine(vllm_server.url, tokenizer=tokenizer)) for _ in range(2))
    try:
        sampling = SamplingParams(temperature=0, max_new_tokens=6)
        first.engine.submit(GenerationRequest("1", chat_prompt, sampling))
        second.engine.submit(GenerationRequest("1", chat_prompt, sampling))
        assert first.wait_finished("1", timeout=120).finish_reason in ("stop", "length")
        assert second.wait_finished("1", timeout=120).finish_reason in ("stop", "length")
        assert first.text("1") == second.text("1")
    finally:
        first.close()
        second.close()
