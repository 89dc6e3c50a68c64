"""A candidate adapter against the model in service, on the snapshot's held-out examples.

Three checks: held-out loss on the reply tokens; a replay of held-out corrected turns, each
generated reply scored against the agent's correction (token F1, MiniLM similarity); and the
unrelated prompts, whose answers must carry none of the facts the build taught.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from statistics import fmean
from typing import TYPE_CHECKING, Any

import torch
from django.conf import settings

from conversations.prompts import Turn

from . import general_prompts
from .base import generate_greedy
from .datasets import Renderer
from .similarity import similarities, token_f1
from .training import collate, tokenize

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CANDIDATE, ACTIVE = "candidate", "active"

# Numbers, prices, codes, and capitalised words inside a sentence: what a taught fact is made of.
TERM = re.compile(r"[$€£]?\d[\w.,:%-]*\w|[$€£]?\d|(?<=[a-z0-9,;] )[A-Z][\w'-]+")
# A number with the word after it ("2 hours", "45 days"): a bare "2" is everyday, "2 hours" is taught.
QUANTITY = re.compile(r"[$€£]?\d[\w.,:%-]*\s[a-z]+")


@dataclass(frozen=True)
class HeldOut:
    prompt: str
    completion: str
    reply: str
    source: str
    question: str


def fact_terms(text: str) -> set[str]:
    terms = TERM.findall(text) + QUANTITY.findall(text)
    return {term.lower().rstrip(".,") for term in terms}


def taught_terms(taught_replies: Sequence[str], general_replies: Sequence[str]) -> set[str]:
    """Fact-like terms of the taught replies that the base model's general chat never uses."""
    everyday = set().union(*(fact_terms(r) for r in general_replies)) if general_replies else set()
    return set().union(*(fact_terms(r) for r in taught_replies)) - everyday if taught_replies else set()


def leaked(reply: str, *, taught: set[str], baseline: str, prompt: str) -> list[str]:
    """Taught terms in ``reply`` that neither the prompt nor the model in service's reply contains."""
    return sorted((fact_terms(reply) & taught) - fact_terms(baseline) - fact_terms(prompt))


class Contenders:
    """One base model carrying the candidate adapter and, if any, the active one; switch by name."""

    def __init__(self, base: PreTrainedModel, candidate_path: str, active_path: str | None) -> None:
        from peft import PeftModel

        self.model = PeftModel.from_pretrained(base, candidate_path, adapter_name=CANDIDATE)
        self.has_active = bool(active_path)
        if active_path:
            self.model.load_adapter(active_path, adapter_name=ACTIVE)
        self.model.eval()

    @contextmanager
    def use(self, name: str) -> Iterator[PeftModel]:
        if name == ACTIVE and not self.has_active:
            with self.model.disable_adapter():  # the bare base model is what serves
                yield self.model
            return
        self.model.set_adapter(name)
        yield self.model


def heldout_loss(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, examples: Sequence[HeldOut], *, max_seq_len: int
) -> float | None:
    """Mean cross-entropy per reply token, over all held-out examples."""
    if not examples:
        return None
    tokenized = tokenize([(e.prompt, e.completion) for e in examples], tokenizer, max_seq_len)
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(tokenized), 8):
            batch = collate(tokenized[start : start + 8], tokenizer.pad_token_id)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            # Position t predicts token t+1: (batch, width-1, vocab) against (batch, width-1).
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:], ignore_index=-100, reduction="sum"
            )
            total += float(losses)
            count += int((batch["labels"][:, 1:] != -100).sum())
    return round(total / count, 4) if count else None


def evaluate(
    *,
    contenders: Contenders,
    tokenizer: PreTrainedTokenizerBase,
    heldout: Sequence[HeldOut],
    taught: set[str],
    system_prompt: str,
    max_seq_len: int,
    max_new_tokens: int,
    max_replays: int,
) -> dict[str, Any]:
    """Every check for both models; the report keeps each model's replies side by side."""
    replays = [e for e in heldout if e.source == "correction"][:max_replays]
    renderer = Renderer(tokenizer, system_prompt=system_prompt, max_seq_len=max_seq_len)
    unrelated_prompts = [renderer.prompt_for([Turn("customer", q)]) for q in general_prompts.UNRELATED]
    result: dict[str, Any] = {"heldout_examples": len(heldout), "replayed": len(replays)}
    replies: dict[str, list[str]] = {}
    unrelated: dict[str, list[str]] = {}
    penalty = settings.GENERATION_REPETITION_PENALTY  # as the worker samples, but greedy
    for name in (CANDIDATE, ACTIVE):
        with contenders.use(name) as model:
            result.setdefault("heldout_loss", {})[name] = heldout_loss(
                model, tokenizer, heldout, max_seq_len=max_seq_len
            )
            replies[name] = generate_greedy(
                model, tokenizer, [e.prompt for e in replays], max_new_tokens=max_new_tokens, repetition_penalty=penalty
            )
            unrelated[name] = generate_greedy(
                model, tokenizer, unrelated_prompts, max_new_tokens=max_new_tokens, repetition_penalty=penalty
            )

    references = [e.reply for e in replays]
    examples: list[dict[str, str | float]] = [
        {"question": e.question, "correction": e.reply, CANDIDATE: replies[CANDIDATE][i], ACTIVE: replies[ACTIVE][i]}
        for i, e in enumerate(replays)
    ]
    for name in (CANDIDATE, ACTIVE):
        f1s = [token_f1(reply, ref) for reply, ref in zip(replies[name], references, strict=True)]
        sims = similarities(replies[name], references)
        result.setdefault("replay_f1", {})[name] = round(fmean(f1s), 4) if f1s else None
        result.setdefault("replay_similarity", {})[name] = round(fmean(sims), 4) if sims else None
        for example, f1, sim in zip(examples, f1s, sims, strict=True):
            example[f"{name}_f1"], example[f"{name}_similarity"] = round(f1, 4), sim
    result["replays"] = examples

    leaks = []
    for question, mine, theirs in zip(general_prompts.UNRELATED, unrelated[CANDIDATE], unrelated[ACTIVE], strict=True):
        terms = leaked(mine, taught=taught, baseline=theirs, prompt=question)
        leaks.append({"question": question, CANDIDATE: mine, ACTIVE: theirs, "leaked": terms})
    result["unrelated"] = leaks
    result["unrelated_leaks"] = sum(1 for row in leaks if row["leaked"])
    result["checks"] = verdict(result)
    return result


def verdict(result: dict[str, Any]) -> dict[str, bool]:
    """The checks an admin reads before promoting; all true means the candidate is no worse."""

    def no_worse(key: str, lower_is_better: bool = False) -> bool:
        mine: float | None = result[key][CANDIDATE]
        theirs: float | None = result[key][ACTIVE]
        if mine is None or theirs is None:
            return True
        return mine <= theirs if lower_is_better else mine >= theirs

    return {
        "heldout_loss_no_worse": no_worse("heldout_loss", lower_is_better=True),
        "replay_f1_no_worse": no_worse("replay_f1"),
        "replay_similarity_no_worse": no_worse("replay_similarity"),
        "no_taught_facts_in_unrelated": result["unrelated_leaks"] == 0,
    }
