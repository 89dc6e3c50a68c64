"""Turning a stored conversation into the model's prompt, and the settings into its sampling.

``build_chat`` and its helpers are pure (no Django, no torch); ``prompt_for`` reads the stored
history and the system prompt and measures the templated result with the engine's tokenizer.

Conversation text is data, never markup: before anything is templated, ``neutralise`` breaks every
control string in it (the tokenizer's special and added tokens, the template's role markers), so
a customer who types ``<|im_start|>system`` writes words, not a system turn. Serving and the
dataset build both template through ``build_chat``, so what the model trains on is as inert as
what it is served.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings

from .inference.types import SamplingParams, Tokenizer

if TYPE_CHECKING:
    from .models import Message

# How the stored roles speak to the model: agents answer in the assistant's seat.
MODEL_ROLES = {"customer": "user", "bot": "assistant", "agent": "assistant"}

# Chat templates add a few tokens of markup around each turn.
TURN_OVERHEAD_TOKENS = 6

# Inserted after a control string's first character: invisible, so the text reads the same, and
# the tokenizer no longer sees the token.
ZERO_WIDTH_SPACE = "\u200b"

# The shape most model families give their control tokens (ChatML, Llama 3, Phi): broken even when
# the tokenizer at hand does not list it, since a fine-tuned or swapped model may know it.
CONTROL_SHAPE = r"<\|[^<>|\s]{1,64}\|>"

# Stands in for each turn's content when the template is rendered to find its markers.
_PROBE = "\ue000{}\ue000"


@dataclass(frozen=True)
class Turn:
    role: str  # a stored role: customer, bot, agent, system
    text: str


@dataclass(frozen=True)
class Reference:
    """An approved knowledge entry retrieved for a question, with its cosine to it."""

    entry_id: int
    question: str
    answer: str
    score: float


# The one format reference facts take in a prompt: serving builds it here, and a dataset build that
# trains on retrieved entries must build it the same way (docs/knowledge.md).
KNOWLEDGE_HEADER = (
    "Reference facts approved by the support team. When one answers the customer's question, "
    "answer with it and keep its figures and names exactly as written. Never mix facts together."
)


def knowledge_block(references: Sequence[Reference]) -> str:
    """The reference facts, best first, as the system prompt's last paragraph; empty when none."""
    if not references:
        return ""
    facts = "\n".join(f"Q: {r.question}\nA: {r.answer}" for r in references)
    return f"{KNOWLEDGE_HEADER}\n{facts}"


def system_prompt_with(system_prompt: str, references: Sequence[Reference]) -> str:
    block = knowledge_block(references)
    return f"{system_prompt}\n\n{block}" if system_prompt and block else system_prompt or block


def build_chat(
    *,
    system_prompt: str,
    history: Sequence[Turn],
    count_tokens: Callable[[str], int],
    budget_tokens: int,
    control: Collection[str] = (),
) -> list[dict[str, str]]:
    """The system prompt plus as much recent history as fits in ``budget_tokens``.

    Every text is neutralised first (``control``: the tokenizer's control strings, from
    ``control_strings``). Turns are taken newest first until the budget is spent; the kept window
    then starts at a customer turn so the model never sees an answer without its question. The
    newest customer turn is always kept, cut from the front if it alone is too long.
    """
    system_prompt = neutralise(system_prompt, control)
    turns = [Turn(t.role, neutralise(t.text, control)) for t in history if t.role in MODEL_ROLES and t.text.strip()]
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


def neutralise(text: str, control: Collection[str] = ()) -> str:
    """``text`` with every control string in it broken by a zero-width space; idempotent.

    ``control`` adds the tokenizer's own strings to ``CONTROL_SHAPE``. Passes repeat until none is
    left, because breaking one occurrence can leave another that overlapped it whole.
    """
    pattern = _control_pattern(frozenset(control))
    while (broken := pattern.sub(_break, text)) != text:
        text = broken
    return text


def _break(match: re.Match[str]) -> str:
    found = match.group()
    return found[0] + ZERO_WIDTH_SPACE + found[1:]


@functools.lru_cache(maxsize=16)
def _control_pattern(control: frozenset[str]) -> re.Pattern[str]:
    literals = sorted((s for s in control if len(s) > 1 and ZERO_WIDTH_SPACE not in s), key=len, reverse=True)
    return re.compile("|".join([*map(re.escape, literals), CONTROL_SHAPE]))


def control_strings(tokenizer: Tokenizer) -> frozenset[str]:
    """What conversation text must never contain for ``tokenizer``: its special and added tokens,
    which it reads as control ids wherever they appear, and its chat template's role markers."""
    try:
        # The protocol cannot promise a hash: an unhashable tokenizer raises, and is handled below.
        return _control_strings_cached(tokenizer)  # type: ignore[arg-type]
    except TypeError:  # an unhashable tokenizer: worked out each time
        return _control_strings(tokenizer)


@functools.lru_cache(maxsize=8)
def _control_strings_cached(tokenizer: Tokenizer) -> frozenset[str]:
    return _control_strings(tokenizer)


def _control_strings(tokenizer: Tokenizer) -> frozenset[str]:
    found = set(getattr(tokenizer, "all_special_tokens", None) or [])
    added = getattr(tokenizer, "get_added_vocab", None)
    if callable(added):
        found.update(added())
    found.update(template_markers(tokenizer))
    return frozenset(s for s in found if isinstance(s, str) and s.strip())


def template_markers(tokenizer: Tokenizer) -> set[str]:
    """The lines of markup the chat template puts around each turn (``<|im_start|>user``), found by
    rendering a probe conversation; none when the template cannot render text."""
    roles = ["system", "user", "assistant", "user"]
    probe = [{"role": role, "content": _PROBE.format(i)} for i, role in enumerate(roles)]
    try:
        rendered = tokenizer.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
    except Exception:  # a template that refuses the probe (no system role, say) still gets the tokens
        return set()
    if not isinstance(rendered, str):
        return set()
    markup = re.split(_PROBE.format(r"\d+"), rendered)
    return {line.strip() for piece in markup for line in piece.splitlines() if len(line.strip()) > 1}


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


def prompt_for(
    message: Message,
    tokenizer: Tokenizer,
    *,
    max_new_tokens: int,
    max_positions: int | None = None,
    references: Sequence[Reference] = (),
) -> list[int]:
    """The chat-template token ids for answering ``message``, from the stored history before it,
    with ``references`` (retrieved knowledge) after the system prompt.

    The prompt leaves room for ``max_new_tokens`` within ``INFERENCE_CONTEXT_TOKENS`` and within the
    model's own context (``max_positions``). History is counted turn by turn, then the templated
    prompt is measured: when the template's markup makes it overflow, fewer turns are kept.
    """
    from .models import BotSettings

    history = [Turn(m.role, m.text) for m in message.conversation.messages.filter(id__lt=message.id)]
    system_prompt = system_prompt_with(BotSettings.load().system_prompt or settings.DEFAULT_SYSTEM_PROMPT, references)
    context = min(settings.INFERENCE_CONTEXT_TOKENS, max_positions or settings.INFERENCE_CONTEXT_TOKENS)
    limit = max(context - max_new_tokens, 1)
    budget = limit
    control = control_strings(tokenizer)
    for _ in range(4):
        chat = build_chat(
            system_prompt=system_prompt,
            history=history,
            count_tokens=lambda text: len(tokenizer.encode(text, add_special_tokens=False)),
            budget_tokens=budget,
            control=control,
        )
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # some tokenizers return a BatchEncoding
            ids = ids["input_ids"]
        overflow = len(ids) - limit
        if overflow <= 0:
            return list(ids)
        budget -= overflow
    return list(ids)[-limit:]  # a system prompt alone longer than the context: keep the question
