"""The preference step: DPO on the stored pairs, the adapter against the same model without it.

A tiny randomly initialised Llama stands in for the base model in the fast tests (the same
architecture and module names as SmolLM2, a thousandth of the work); one test runs the real one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from finetuning.datasets import preference_triples
from finetuning.training import (
    TrainingConfig,
    collate,
    lora_model,
    preference_loss,
    preference_schedule,
    sequence_logprobs,
    tokenize,
    train,
)

PROMPT = "<|im_start|>user\nHow much is gift wrapping?<|im_end|>\n<|im_start|>assistant\n"
CHOSEN = "Gift wrapping costs $4.50 per item.<|im_end|>\n"
REJECTED = "Gift wrapping is free of charge.<|im_end|>\n"
FAST = {"rank": 4, "alpha": 8, "max_seq_len": 64, "batch_size": 2, "epochs": 1, "warmup_steps": 1}


def tiny_model(tokenizer: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(config)


def margin(model: Any, tokenizer: Any) -> float:
    """log p(chosen) - log p(rejected) under ``model``."""
    chosen, rejected = tokenize([(PROMPT, CHOSEN), (PROMPT, REJECTED)], tokenizer, 64)
    with torch.no_grad():
        logprobs, _ = sequence_logprobs(model, collate([chosen, rejected], tokenizer.pad_token_id))
    return float(logprobs[0] - logprobs[1])


def test_a_fresh_adapter_has_no_preference_yet(tokenizer: Any) -> None:
    model = lora_model(tiny_model(tokenizer), TrainingConfig(**FAST))
    [chosen], [rejected] = tokenize([(PROMPT, CHOSEN)], tokenizer, 64), tokenize([(PROMPT, REJECTED)], tokenizer, 64)
    loss = preference_loss(model, [chosen], [rejected], pad_id=tokenizer.pad_token_id, beta=0.1, sft_weight=0.0)
    # LoRA starts as the identity: the adapter's log-ratio is the reference's, the margin is 0.
    assert float(loss) == pytest.approx(math.log(2), abs=1e-5)
    with_sft = preference_loss(model, [chosen], [rejected], pad_id=tokenizer.pad_token_id, beta=0.1, sft_weight=1.0)
    assert float(with_sft) > float(loss)


def test_preference_steps_follow_sft_and_prefer_the_correction(tokenizer: Any, tmp_path: Path) -> None:
    base = tiny_model(tokenizer)
    before = margin(base, tokenizer)
    config = TrainingConfig(**FAST, learning_rate=1e-2, dpo_steps=12, dpo_batch_size=1, dpo_sft_weight=0.0)
    result = train(
        model=base,
        tokenizer=tokenizer,
        pairs=[(PROMPT, CHOSEN)] * 2,
        preferences=[(PROMPT, CHOSEN, REJECTED)],
        output_dir=tmp_path / "adapter",
        checkpoint_dir=tmp_path / "checkpoints",
        config=config,
    )
    assert result.steps == 1 + 12  # one SFT step, then the preference steps
    from peft import PeftModel

    trained = PeftModel.from_pretrained(tiny_model(tokenizer), str(result.adapter_path))
    assert margin(trained, tokenizer) > before + 1.0


def test_no_preference_steps_without_pairs_or_with_the_setting_off() -> None:
    assert preference_schedule(0, TrainingConfig(dpo_steps=5)) == []
    assert preference_schedule(3, TrainingConfig(dpo_steps=0)) == []
    steps = preference_schedule(3, TrainingConfig(dpo_steps=4, dpo_batch_size=2))
    assert len(steps) == 4 and all(len(batch) == 2 for batch in steps)
    flat = [i for batch in steps for i in batch]
    assert sorted(flat[:3]) == [0, 1, 2]  # every pair once before any repeats


def test_the_rejected_reply_ends_its_turn_as_the_chosen_one_does(tokenizer: Any) -> None:
    [(prompt, chosen, rejected)] = preference_triples(
        [(PROMPT, CHOSEN, "Gift wrapping costs $4.50 per item.", "Free, <|im_start|>system")], tokenizer
    )
    assert (prompt, chosen) == (PROMPT, CHOSEN)
    assert rejected.endswith("<|im_end|>\n") and rejected.startswith("Free, <\u200b|im_start|>")


@pytest.mark.model
def test_a_few_preference_steps_on_the_real_model_raise_the_corrections_margin(
    tokenizer: Any, model_path: str, torch_threads: None, tmp_path: Path
) -> None:
    from peft import PeftModel

    from finetuning.base import load_model

    before = margin(load_model(model_path), tokenizer)
    config = TrainingConfig(**FAST, learning_rate=2e-3, dpo_steps=4, dpo_batch_size=1)
    result = train(
        model=load_model(model_path),
        tokenizer=tokenizer,
        pairs=[(PROMPT, CHOSEN)],
        preferences=[(PROMPT, CHOSEN, REJECTED)],
        output_dir=tmp_path / "adapter",
        checkpoint_dir=tmp_path / "checkpoints",
        config=config,
    )
    after = margin(PeftModel.from_pretrained(load_model(model_path), str(result.adapter_path)), tokenizer)
    assert after > before, (before, after)


def test_a_runs_preference_steps_come_from_the_settings_unless_its_config_overrides_them(settings: Any) -> None:
    from finetuning.pipeline import training_defaults

    settings.FINETUNING_DPO_STEPS, settings.FINETUNING_DPO_BETA = 7, 0.25
    assert TrainingConfig.from_dict(training_defaults()).dpo_steps == 7
    assert TrainingConfig.from_dict(training_defaults() | {"dpo_steps": 0}).dpo_steps == 0
    assert TrainingConfig.from_dict(training_defaults()).dpo_beta == 0.25
