"""Turning a stored conversation into the model's chat messages. Pure functions, no Django, no torch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
