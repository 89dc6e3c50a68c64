"""Turning a stored conversation into the model's prompt, and the settings into its sampling.

``build_chat`` and its helpers are pure (no Django, no torch); ``prompt_for`` reads the stored
history and the system prompt and measures the templated result with the engine's tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings

from .inference.types import SamplingParams

if TYPE_CHECKING:
    from .models import Message

# How the stored roles speak to the model: agents answer in the assistant's seat.
MODEL_ROLES = {"customer": "user", "bot": "assistant", "agent": "assistant"}

# Chat templates add a few tokens of markup around each turn.
TURN_OVERHEAD_TOKENS = 6


@dataclass(frozen=True)
class Turn:
    role: str  # a stored role: customer, bot, agent, system
    text: str


def build_chat(
    *,
    system_prompt: str,
    history: Sequence[Turn],
    count_tokens: Callable[[str], int],
    budget_tokens: int,
) -> list[dict[str, str]]:
    """The system prompt plus as much recent history as fits in ``budget_tokens``.

    Turns are taken newest first until the budget is spent; the kept window then starts at a
    customer turn so the model never sees an answer without its question. The newest customer
    turn is always kept, cut from the front if it alone is too long.
    """
    turns = [t for t in history if t.role in MODEL_ROLES and t.text.strip()]
    remaining = budget_tokens - count_tokens(system_prompt) - TURN_OVERHEAD_TOKENS
    kept: list[Turn] = []
    for turn in reversed(turns):
        cost = count_tokens(turn.text) + TURN_OVERHEAD_TOKENS
        if cost > remaining:
            break
        kept.append(turn)
        remaining -= cost
    kept.reverse()
    while kept and kept[0].role != "customer":
        kept.pop(0)
    if not kept and turns:
        kept = [_clip_front(turns[-1], remaining, count_tokens)]
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages += [{"role": MODEL_ROLES[t.role], "content": t.text} for t in kept]
    return _merge_consecutive(messages)


def _clip_front(turn: Turn, budget: int, count_tokens: Callable[[str], int]) -> Turn:
    """Keep the end of an over-long turn: the question is usually at the end of what was typed."""
    text = turn.text
    while text and count_tokens(text) > max(budget, 1):
        text = text[len(text) // 4 or 1 :]
    return Turn(turn.role, text)


def _merge_consecutive(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Chat templates expect alternating turns; two customer messages in a row become one."""
    merged: list[dict[str, str]] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"] and message["role"] != "system":
            merged[-1] = {"role": message["role"], "content": merged[-1]["content"] + "\n" + message["content"]}
        else:
            merged.append(message)
    return merged


def sampling_from_settings() -> SamplingParams:
    seed = settings.GENERATION_SEED
    return SamplingParams(
        temperature=settings.GENERATION_TEMPERATURE,
        top_p=settings.GENERATION_TOP_P,
        top_k=settings.GENERATION_TOP_K,
        repetition_penalty=settings.GENERATION_REPETITION_PENALTY,
        max_new_tokens=settings.GENERATION_MAX_NEW_TOKENS,
        seed=int(seed) if seed not in (None, "") else None,
    )


def prompt_for(message: Message, tokenizer: Any, *, max_new_tokens: int, max_positions: int | None = None) -> list[int]:
    """The chat-template token ids for answering ``message``, from the stored history before it.

    The prompt leaves room for ``max_new_tokens`` within ``INFERENCE_CONTEXT_TOKENS`` and within the
    model's own context (``max_positions``). History is counted turn by turn, then the templated
    prompt is measured: when the template's markup makes it overflow, fewer turns are kept.
    """
    from .models import BotSettings

    history = [Turn(m.role, m.text) for m in message.conversation.messages.filter(id__lt=message.id)]
    system_prompt = BotSettings.load().system_prompt or settings.DEFAULT_SYSTEM_PROMPT
    context = min(settings.INFERENCE_CONTEXT_TOKENS, max_positions or settings.INFERENCE_CONTEXT_TOKENS)
    limit = max(context - max_new_tokens, 1)
    budget = limit
    for _ in range(4):
        chat = build_chat(
            system_prompt=system_prompt,
            history=history,
            count_tokens=lambda text: len(tokenizer.encode(text, add_special_tokens=False)),
            budget_tokens=budget,
        )
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # some tokenizers return a BatchEncoding
            ids = ids["input_ids"]
        overflow = len(ids) - limit
        if overflow <= 0:
            return list(ids)
        budget -= overflow
    return list(ids)[-limit:]  # a system prompt alone longer than the context: keep the question
