"""A context and a reply in the tokenizer's chat template, as the serving worker builds them: the
dataset build, the evaluation and the paraphrases all render through here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conversations.prompts import Turn, build_chat, control_strings, neutralise


@dataclass
class Rendered:
    chat: list[dict[str, str]]
    prompt: str
    completion: str


class Renderer:
    """Renders a context and a reply with the tokenizer's chat template, as the worker does."""

    def __init__(self, tokenizer: Any, *, system_prompt: str, max_seq_len: int) -> None:
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.max_seq_len = max_seq_len

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt_for(self, history: Sequence[Turn]) -> str:
        """The templated prompt alone, ending where the assistant's reply starts."""
        chat = build_chat(
            system_prompt=self.system_prompt,
            history=history,
            count_tokens=self.count,
            budget_tokens=self.max_seq_len,
            control=control_strings(self.tokenizer),
        )
        return str(self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False))

    def render(self, history: Sequence[Turn], reply: str, *, system_prompt: str | None = None) -> Rendered | None:
        """``system_prompt`` replaces the renderer's own for this example (one with references)."""
        control = control_strings(self.tokenizer)
        reply = neutralise(reply, control)  # the completion is trained on too: as inert as the prompt
        reply_tokens = self.count(reply)
        budget = self.max_seq_len - reply_tokens - 8
        if reply_tokens > self.max_seq_len // 2 or budget <= 0:
            return None
        chat = build_chat(
            system_prompt=self.system_prompt if system_prompt is None else system_prompt,
            history=history,
            count_tokens=self.count,
            budget_tokens=budget,
            control=control,
        )
        prompt = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        full = self.tokenizer.apply_chat_template([*chat, {"role": "assistant", "content": reply}], tokenize=False)
        completion = full[len(prompt) :] if full.startswith(prompt) else reply + (self.tokenizer.eos_token or "")
        return Rendered(chat, prompt, completion)
