"""LoRA adapters served beside the base model: same batch, hot-swapped, broken ones contained."""

from __future__ import annotations

import pytest

from conversations.inference.adapters import AdapterLoadError
from conversations.inference.types import GenerationRequest, SamplingParams

pytestmark = pytest.mark.model

GREEDY = SamplingParams(temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0, max_new_tokens=32)


def greedy(
    request_id: str, prompt: tuple[int, ...], max_new_tokens: int = 32, adapter: str | None = None
) -> GenerationRequest:
    sampling = SamplingParams(**{**GREEDY.__dict__, "max_new_tokens": max_new_tokens})
    return GenerationRequest(request_id=request_id, prompt_ids=prompt, sampling=sampling, adapter=adapter)


def test_it_matches_peft_generate_with_base_and_adapter_rows_in_one_batch(
    engine, prompts, reference, collector, lora_a
):
    engine.load_adapter("v1", lora_a)
    engine.submit(greedy("base", prompts[1], 28))
    engine.submit(greedy("tuned", prompts[1], 28, adapter="v1"))
    engine.submit(greedy("tuned-long", prompts[4], 20, adapter="v1"))
    collector.drain(engine)
    assert collector.ids("base") == reference.greedy(prompts[1], 28)
    assert collector.ids("tuned") == reference.greedy(prompts[1], 28, adapter=lora_a)
    assert collector.ids("tuned-long") == reference.greedy(prompts[4], 20, adapter=lora_a)
    assert collector.ids("tuned") != collector.ids("base"), "the random LoRA should change the reply"


def test_it_hot_swaps_adapters_with_replies_in_flight(engine, prompts, reference, collector, lora_a, lora_b):
    engine.load_adapter("support", lora_a)
    engine.submit(greedy("base", prompts[3], 24))
    engine.submit(greedy("old", prompts[1], 28, adapter="support"))
    for _ in range(6):
        collector.add(engine.step())
    engine.load_adapter("support", lora_b)  # a new version under the same name, mid-reply
    engine.submit(greedy("new", prompts[1], 20, adapter="support"))
    for _ in range(4):
        collector.add(engine.step())
    engine.unload_adapter("support")  # "old" and "new" still run on their versions
    engine.submit(greedy("after", prompts[1], 5, adapter="support"))
    collector.drain(engine)
    assert collector.ids("base") == reference.greedy(prompts[3], 24)
    assert collector.ids("old") == reference.greedy(prompts[1], 28, adapter=lora_a)
    assert collector.ids("new") == reference.greedy(prompts[1], 20, adapter=lora_b)
    assert collector.last("after").finish_reason == "error"
    assert "not loaded" in (collector.last("after").error or "")
    assert engine.metrics()["adapters"] == [] and not engine._adapters.names  # freed once idle


def test_it_fails_only_the_request_that_names_a_broken_adapter(engine, prompts, reference, collector, tmp_path, lora_a):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{ not json")
    with pytest.raises(AdapterLoadError):
        engine.load_adapter("broken", broken)
    engine.load_adapter("good", lora_a)
    engine.submit(greedy("base", prompts[2], 12))
    engine.submit(greedy("on-broken", prompts[2], 12, adapter="broken"))
    engine.submit(greedy("on-unknown", prompts[2], 12, adapter="nobody"))
    engine.submit(greedy("on-good", prompts[1], 12, adapter="good"))
    collector.drain(engine)
    assert collector.last("on-broken").finish_reason == "error"
    assert "failed to load" in (collector.last("on-broken").error or "")
    assert "not loaded" in (collector.last("on-unknown").error or "")
    assert collector.ids("base") == reference.greedy(prompts[2], 12)
    assert collector.ids("on-good") == reference.greedy(prompts[1], 12, adapter=lora_a)


def test_it_refuses_an_adapter_for_another_model_without_touching_the_model(engine, tmp_path, lora_a):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "adapter_config.json").write_text((lora_a / "adapter_config.json").read_text())
    from safetensors.torch import load_file, save_file

    weights = load_file(lora_a / "adapter_model.safetensors")
    save_file(
        {k: v[:, :7].contiguous() if "lora_A" in k else v for k, v in weights.items()},
        foreign / "adapter_model.safetensors",
    )
    with pytest.raises(AdapterLoadError, match="shape"):
        engine.load_adapter("foreign", foreign)
    assert not engine._adapters.names
