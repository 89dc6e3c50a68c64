"""The base model and its tokenizer, loaded the way the inference worker loads them, and a batched
greedy generator for the build's general replies and the evaluation's replays."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings

from conversations.inference.model_store import resolve_base_model

if TYPE_CHECKING:  # the web process imports this module and never loads torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def base_model_path() -> str:
    return resolve_base_model(settings.BASE_MODEL, settings.MODEL_CACHE_DIR)


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str) -> PreTrainedModel:
    """A fresh float32 copy of the base model: training mutates it, so it is never shared."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids = {tokenizer.eos_token_id}
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return sorted(i for i in ids if i is not None)


def left_padded(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> tuple[Any, Any]:
    """(batch, width) token ids and attention mask of raw prompts, left-padded so every prompt's
    last token sits at the same position, where generation starts."""
    import torch

    batch = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    width = max(len(ids) for ids in batch)
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(ids)) + ids for ids in batch])
    attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch])
    return input_ids, attention


def generate_greedy(
    model: Any,  # the base model or a peft wrapper: transformers' types declare generate() on neither
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    repetition_penalty: float = 1.0,
) -> list[str]:
    """Greedy replies to templated prompts, batched with left padding; text up to the end of turn."""
    import torch

    replies: list[str] = []
    stop_ids = end_of_turn_ids(tokenizer)
    model.eval()
    for start in range(0, len(prompts), batch_size):
        input_ids, attention = left_padded(tokenizer, prompts[start : start + batch_size])
        width = input_ids.shape[1]
        with torch.no_grad():
            output = model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                repetition_penalty=repetition_penalty,
                eos_token_id=stop_ids,
                pad_token_id=tokenizer.pad_token_id,
            )
        for row in output[:, width:].tolist():
            cut = next((i for i, token in enumerate(row) if token in stop_ids), len(row))
            reply = cast(str, tokenizer.decode(row[:cut], skip_special_tokens=True))  # one sequence: one string
            replies.append(reply.strip())
    return replies


def sample_lines(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    per_prompt: int,
    max_new_tokens: int,
    batch_size: int = 16,
    seed: int = 0,
    temperature: float = 0.8,
) -> list[list[str]]:
    """``per_prompt`` sampled continuations of each raw (untemplated) prompt, each up to its first
    line break: the shape of a few-shot completion. Seeded, so one build draws the same lines."""
    import torch

    stop_ids = sorted({*tokenizer.encode("\n", add_special_tokens=False), tokenizer.eos_token_id})
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    found: list[list[str]] = []
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            # generate returns (batch * per_prompt, width + new).
            input_ids, attention = left_padded(tokenizer, prompts[start : start + batch_size])
            width = input_ids.shape[1]
            with torch.no_grad():
                output = model.generate(
                    input_ids=input_ids,
                    attention_mask=attention,
                    max_new_tokens=max_new_tokens,
                    do_sample=True,
                    temperature=temperature,
                    top_p=0.95,
                    num_return_sequences=per_prompt,
                    eos_token_id=stop_ids,
                    pad_token_id=tokenizer.pad_token_id,
                )
            lines = [cast(str, tokenizer.decode(row, skip_special_tokens=True)) for row in output[:, width:].tolist()]
            lines = [line.split("\n")[0].strip() for line in lines]
            found += [lines[i : i + per_prompt] for i in range(0, len(lines), per_prompt)]
    finally:
        torch.random.set_rng_state(generator_state)  # training's own seed is left as it was
    return found
