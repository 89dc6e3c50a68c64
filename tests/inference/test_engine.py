"""The engine against the real SmolLM2 on the CPU: batching must never change a greedy reply."""

from __future__ import annotations

import threading
import time

import pytest

from conversations.inference.engine import Engine
from conversations.inference.types import GenerationRequest, QueueFull, SamplingParams, TokenChunk

from .conftest import CUSTOMER_MESSAGES

pytestmark = pytest.mark.model

GREEDY = SamplingParams(temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0, max_new_tokens=32)


def greedy(request_id: str, prompt: tuple[int, ...], max_new_tokens: int = 32, **kwargs: object) -> GenerationRequest:
    sampling = SamplingParams(**{**GREEDY.__dict__, "max_new_tokens": max_new_tokens})
    return GenerationRequest(request_id=request_id, prompt_ids=prompt, sampling=sampling, **kwargs)  # type: ignore[arg-type]


def test_it_matches_generate_token_for_token_in_a_mixed_batch(engine, prompts, reference, collector):
    for i, prompt in enumerate(prompts):
        engine.submit(greedy(f"r{i}", prompt, max_new_tokens=32))
    collector.drain(engine)
    for i, prompt in enumerate(prompts):
        assert collector.ids(f"r{i}") == reference.greedy(prompt, 32), f"reply r{i} diverged from generate"


def test_it_lets_requests_join_and_leave_mid_loop(engine, prompts, reference, collector):
    lengths = {"long": 32, "short": 6, "late": 24, "later": 28}
    engine.submit(greedy("long", prompts[4], lengths["long"]))
    engine.submit(greedy("short", prompts[1], lengths["short"]))
    running_seen = []
    for step in range(80):
        if step == 3:
            engine.submit(greedy("late", prompts[0], lengths["late"]))
        if step == 11:
            engine.submit(greedy("later", prompts[3], lengths["later"]))
        collector.add(engine.step())
        running_seen.append(engine.metrics()["running"])
        if step > 11 and not engine.has_work():
            break
    assert 3 in running_seen and 1 in running_seen  # grew after joins, shrank after leaves
    assert collector.finished("short") and len(collector.ids("short")) == 6
    for request_id, prompt in (
        ("long", prompts[4]),
        ("short", prompts[1]),
        ("late", prompts[0]),
        ("later", prompts[3]),
    ):
        assert collector.ids(request_id) == reference.greedy(prompt, lengths[request_id]), request_id


def test_it_finishes_with_length_or_stop(engine, prompts, reference, collector, tokenizer):
    engine.submit(greedy("hi", prompts[0], 32))  # "Hi!" gets a short answer ending in EOS
    engine.submit(greedy("story", prompts[3], 5))
    collector.drain(engine)
    assert collector.last("hi").finish_reason == "stop"
    assert collector.ids("hi")[-1] == tokenizer.eos_token_id
    assert collector.last("story").finish_reason == "length"
    assert collector.last("story").token_count == 5
    assert collector.text("story") == tokenizer.decode(reference.greedy(prompts[3], 5), skip_special_tokens=True)


def test_it_removes_the_stop_string_and_frees_the_slot(engine, prompts, reference, collector, tokenizer):
    full = tokenizer.decode(reference.greedy(prompts[1], 32), skip_special_tokens=True)
    stop = full.split()[4]  # a word in the middle of the greedy reply
    request = GenerationRequest("stop", prompts[1], SamplingParams(**{**GREEDY.__dict__, "stop": ("@@", stop)}))
    engine.submit(request)
    collector.drain(engine)
    assert collector.last("stop").finish_reason == "stop"
    assert collector.text("stop") == full[: full.index(stop)]
    assert engine.metrics()["running"] == 0


def test_it_frees_the_slot_of_a_cancelled_reply_keeping_its_text(model, tokenizer, prompts, collector):
    engine = Engine(model, tokenizer, model_name="m", max_running=1, max_queue=4)
    engine.submit(greedy("first", prompts[3], 30))
    engine.submit(greedy("second", prompts[0], 4))
    for _ in range(5):
        collector.add(engine.step())
    assert engine.metrics()["running"] == 1 and engine.metrics()["queued"] == 1
    partial = collector.text("first")
    engine.cancel("first")
    collector.add(engine.step())
    assert collector.last("first").finish_reason == "cancelled"
    assert collector.text("first").startswith(partial) and partial
    assert "second" in collector.chunks  # admitted in the very step that freed the slot
    collector.drain(engine)
    assert collector.last("second").finish_reason in ("stop", "length")


def test_it_cancels_a_queued_request(model, tokenizer, prompts, collector):
    engine = Engine(model, tokenizer, model_name="m", max_running=1, max_queue=4)
    engine.submit(greedy("running", prompts[0], 3))
    engine.submit(greedy("queued", prompts[1], 3))
    engine.cancel("queued")
    collector.drain(engine)
    assert collector.last("queued").finish_reason == "cancelled"
    assert collector.ids("queued") == []


def test_it_raises_queue_full_at_its_bound_and_admits_in_arrival_order(model, tokenizer, prompts, collector):
    engine = Engine(model, tokenizer, model_name="m", max_running=1, max_queue=2)
    engine.submit(greedy("a", prompts[0], 2))
    engine.submit(greedy("b", prompts[1], 2))
    with pytest.raises(QueueFull):
        engine.submit(greedy("c", prompts[2], 2))
    assert engine.metrics()["rejected_total"] == 1
    order: list[str] = []
    while engine.has_work():
        for chunk in engine.step():
            if chunk.request_id not in order:
                order.append(chunk.request_id)
        if len(order) == 1:
            engine.submit(greedy("c", prompts[2], 2))  # room again once "a" started
    assert order == ["a", "b", "c"]


def test_it_times_out_queued_and_running_replies(model, tokenizer, prompts, collector):
    engine = Engine(model, tokenizer, model_name="m", max_running=1, max_queue=4)
    engine.submit(greedy("slow", prompts[3], 200, timeout_s=0.6))
    engine.submit(greedy("waiting", prompts[0], 5, timeout_s=0.3))
    collector.drain(engine)
    assert collector.last("waiting").finish_reason == "timeout"
    assert collector.last("slow").finish_reason == "timeout"
    assert 0 < collector.last("slow").token_count < 200


def test_it_rejects_an_empty_prompt_and_keeps_serving(engine, prompts, collector):
    engine.submit(greedy("empty", ()))
    engine.submit(greedy("fine", prompts[0], 3))
    collector.drain(engine)
    assert collector.last("empty").finish_reason == "error" and "empty" in (collector.last("empty").error or "")
    assert collector.last("fine").finish_reason in ("stop", "length")


def test_it_samples_reproducibly_with_a_seed(engine, prompts, collector):
    sampling = SamplingParams(temperature=0.9, top_p=0.9, top_k=50, repetition_penalty=1.1, max_new_tokens=8, seed=7)
    engine.submit(GenerationRequest("x", prompts[3], sampling))
    engine.submit(GenerationRequest("y", prompts[3], sampling))
    engine.submit(GenerationRequest("z", prompts[1], SamplingParams(max_new_tokens=8, seed=8)))
    collector.drain(engine)
    assert collector.ids("x") == collector.ids("y") and len(collector.ids("x")) > 1


def test_it_applies_the_repetition_penalty_like_generate(engine, prompts, reference_model, collector):
    sampling = SamplingParams(temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.3, max_new_tokens=16)
    engine.submit(GenerationRequest("p", prompts[3], sampling))
    engine.submit(greedy("plain", prompts[1], 16))
    collector.drain(engine)
    import torch

    ids = torch.tensor([prompts[3]])
    expected = reference_model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        repetition_penalty=1.3,
        max_new_tokens=16,
        pad_token_id=2,
    )[0, len(prompts[3]) :].tolist()
    assert collector.ids("p") == expected


def test_it_runs_its_loop_in_a_thread_until_stopped(engine, prompts):
    received: list[TokenChunk] = []
    stop = threading.Event()
    loop = threading.Thread(target=engine.run, args=(received.extend, stop))
    loop.start()
    engine.submit(greedy("bg", prompts[2], 8))
    deadline = time.monotonic() + 30
    while not any(c.finished for c in received) and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    loop.join(timeout=5)
    assert not loop.is_alive()
    assert any(c.finished and c.request_id == "bg" for c in received)
    metrics = engine.metrics()
    assert metrics["ttft_p50_s"] is not None and metrics["tokens_total"] >= 1
    assert set(metrics) >= {"queued", "running", "ttft_p95_s", "tpot_p50_s", "tpot_p95_s", "tokens_per_s"}


def test_it_reuses_the_system_prompt_and_the_previous_turn_token_for_token(
    engine, prompts, reference, collector, tokenizer
):
    engine.submit(greedy("first", prompts[1], 24))
    collector.drain(engine)
    assert engine.metrics()["prompt_tokens_reused_total"] == 0
    # Every prompt starts with the same system prompt: the later ones compute only what follows it.
    for i in (0, 2, 3):
        engine.submit(greedy(f"r{i}", prompts[i], 24))
    # The conversation's next turn starts with the first prompt and the reply the engine wrote.
    reply = tokenizer.decode(collector.ids("first"), skip_special_tokens=True)
    turns = [{"role": "user", "content": CUSTOMER_MESSAGES[1]}, {"role": "assistant", "content": reply}]
    turns.append({"role": "user", "content": "Thanks. And if I no longer have that email address?"})
    encoded = tokenizer.apply_chat_template(turns, add_generation_prompt=True)
    second = tuple(encoded if isinstance(encoded, list) else encoded["input_ids"])
    engine.submit(greedy("second", second, 24))
    collector.drain(engine)
    reused = engine.metrics()["prompt_tokens_reused_total"]
    shared = len(prompts[1]) - 1  # a cached prefix stops at least one token short
    assert reused >= 3 * 20 + shared, "the shared system prompt and the first turn were computed again"
    for i in (0, 2, 3):
        assert collector.ids(f"r{i}") == reference.greedy(prompts[i], 24), f"r{i} diverged from generate"
    assert collector.ids("second") == reference.greedy(second, 24)


def test_it_computes_every_prompt_token_when_prefix_caching_is_off(model, tokenizer, prompts, reference, collector):
    engine = Engine(model, tokenizer, model_name="SmolLM2-135M-Instruct", prefix_cache_tokens=0)
    for i in (0, 1):
        engine.submit(greedy(f"r{i}", prompts[i], 8))
        collector.drain(engine)
    assert engine.metrics()["prompt_tokens_reused_total"] == 0
    assert collector.ids("r1") == reference.greedy(prompts[1], 8)
