"""A candidate adapter against the model in service: held-out examples and probes.

Held-out loss on the reply tokens; a replay of held-out corrected turns, each generated reply
scored against the agent's correction (token F1, MiniLM similarity); paraphrased questions of the
taught facts (recall, wrong facts); and the unrelated prompts, whose answers must carry none of
the facts the build taught (finetuning/probes.py). Each check names the count it rests on, and
one resting on too few examples does not pass (docs/learning-loop.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from statistics import fmean
from typing import TYPE_CHECKING, Any

import torch
from django.conf import settings

from conversations.prompts import Reference, Turn, control_strings, neutralise, system_prompt_with

from .base import generate_greedy
from .probes import FactProbe, leaked, recalled, wrong_terms
from .rendering import Renderer
from .similarity import similarities, token_f1
from .training import collate, tokenize

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CANDIDATE, ACTIVE = "candidate", "active"

# A question's approved knowledge as the worker grounds it: the references for its prompt and the
# approved answer the reply starts with ("" for none); conversations.knowledge.retrieval builds it.
Ground = Callable[[str], tuple[list[Reference], str]]


@dataclass(frozen=True)
class HeldOut:
    prompt: str
    completion: str
    reply: str
    source: str
    question: str


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
            with self.bare() as model:  # the bare base model is what serves
                yield model
            return
        self.model.set_adapter(name)
        yield self.model

    @contextmanager
    def bare(self) -> Iterator[PeftModel]:
        """The base model without any adapter: what writes the probes' paraphrases."""
        with self.model.disable_adapter():
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
    probes: Sequence[FactProbe],
    unrelated: Sequence[str],
    system_prompt: str,
    max_seq_len: int,
    max_new_tokens: int,
    max_replays: int,
    min_examples: int,
    ground: Ground | None = None,
) -> dict[str, Any]:
    """Every check for both models; the report keeps each model's replies side by side.

    Probes and unrelated prompts are asked as new customers, through the prompt the serving
    worker builds: once without knowledge (the adapter alone), and, with ``ground`` (approved
    knowledge is served), once more grounded as the worker grounds them, which is what customers
    get ("grounded" in the report, with checks of its own)."""
    replays = [e for e in heldout if e.source == "correction"][:max_replays]
    renderer = Renderer(tokenizer, system_prompt=system_prompt, max_seq_len=max_seq_len)
    asked = {
        "replays": [e.prompt for e in replays],
        "probes": [renderer.prompt_for([Turn("customer", p.question)]) for p in probes],
        "unrelated": [renderer.prompt_for([Turn("customer", q)]) for q in unrelated],
    }
    leads: dict[str, list[str]] = {}
    grounded_count: dict[str, int] = {}
    if ground is not None:
        for kind, questions in (("probes", [p.question for p in probes]), ("unrelated", list(unrelated))):
            grounded = [_grounded_prompt(tokenizer, q, ground, system_prompt, max_seq_len) for q in questions]
            asked[f"grounded_{kind}"] = [prompt for prompt, _, _ in grounded]
            leads[kind] = [lead for _, lead, _ in grounded]
            grounded_count[kind] = sum(1 for _, _, refs in grounded if refs)
    result: dict[str, Any] = {
        "heldout_examples": len(heldout),
        "replayed": len(replays),
        "retrieval": "on" if ground is not None else "off",
    }
    answers: dict[str, dict[str, list[str]]] = {kind: {} for kind in asked}
    penalty = settings.GENERATION_REPETITION_PENALTY  # as the worker samples, but greedy
    for name in (CANDIDATE, ACTIVE):
        with contenders.use(name) as model:
            result.setdefault("heldout_loss", {})[name] = heldout_loss(
                model, tokenizer, heldout, max_seq_len=max_seq_len
            )
            for kind, prompts in asked.items():
                answers[kind][name] = generate_greedy(
                    model, tokenizer, prompts, max_new_tokens=max_new_tokens, repetition_penalty=penalty
                )
    result |= _replay_report(replays, answers["replays"])
    result |= _probe_report(probes, answers["probes"], taught)
    result |= _leak_report(unrelated, answers["unrelated"], taught)
    if ground is not None:
        result["grounded"] = _grounded_report(probes, unrelated, answers, leads, grounded_count, taught)
    result["checks"], result["not_enough_data"] = verdict(result, min_examples=min_examples)
    counts = CHECK_EXAMPLES | (GROUNDED_CHECK_EXAMPLES if ground is not None else {})
    result["check_examples"] = {check: _count(result, count) for check, count in counts.items()}
    return result


def _grounded_prompt(
    tokenizer: PreTrainedTokenizerBase, question: str, ground: Ground, system_prompt: str, max_seq_len: int
) -> tuple[str, str, list[Reference]]:
    """A new customer's question as the worker prompts it with knowledge: the references after the
    system prompt, and the leading answer already begun (the model goes on from it)."""
    references, lead = ground(question)
    renderer = Renderer(tokenizer, system_prompt=system_prompt_with(system_prompt, references), max_seq_len=max_seq_len)
    prompt = renderer.prompt_for([Turn("customer", question)])
    return prompt + neutralise(lead, control_strings(tokenizer)), lead, references


def _grounded_report(
    probes: Sequence[FactProbe],
    unrelated: Sequence[str],
    answers: dict[str, dict[str, list[str]]],
    leads: dict[str, list[str]],
    grounded_count: dict[str, int],
    taught: set[str],
) -> dict[str, Any]:
    """The probes and unrelated prompts answered with knowledge, each answer its lead and what
    the model went on with; a leak here is a taught term the same model did not say without
    knowledge (the adapter's own leaks are the ungrounded check's)."""
    replies = {
        kind: {
            name: [lead + text for lead, text in zip(leads[kind], answers[f"grounded_{kind}"][name], strict=True)]
            for name in (CANDIDATE, ACTIVE)
        }
        for kind in ("probes", "unrelated")
    }
    report = _probe_report(probes, replies["probes"], taught)
    # Each model's grounded answer against its own answer without knowledge: what grounding added.
    own = {
        name: _leak_report(
            unrelated, {CANDIDATE: replies["unrelated"][name], ACTIVE: answers["unrelated"][name]}, taught
        )
        for name in (CANDIDATE, ACTIVE)
    }
    return {
        "fact_probes": report["fact_probes"],
        "recall": report["recall"],
        "wrong_facts": report["wrong_facts"],
        "probes": report["probes"],
        "grounded": grounded_count,
        "led": {kind: sum(1 for lead in leads[kind] if lead) for kind in ("probes", "unrelated")},
        "unrelated_prompts": len(unrelated),
        "unrelated_leaks": {name: own[name]["unrelated_leaks"] for name in (CANDIDATE, ACTIVE)},
        "unrelated": own[CANDIDATE]["unrelated"],
    }


def _count(result: dict[str, Any], key: str) -> int:
    """A count of the report, "grounded.fact_probes" naming one of the grounded section."""
    section, _, name = key.rpartition(".")
    return int((result[section] if section else result)[name])


def _replay_report(replays: Sequence[HeldOut], replies: dict[str, list[str]]) -> dict[str, Any]:
    """Each held-out corrected turn's replies scored against the agent's correction."""
    result: dict[str, Any] = {}
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
    return result


def _probe_report(probes: Sequence[FactProbe], replies: dict[str, list[str]], taught: set[str]) -> dict[str, Any]:
    """How many paraphrased questions got their fact (recall) and how many got another's (wrong facts)."""
    rows: list[dict[str, Any]] = []
    for i, probe in enumerate(probes):
        row: dict[str, Any] = {"question": probe.question, "fact": probe.fact.answer, "terms": sorted(probe.terms)}
        for name in (CANDIDATE, ACTIVE):
            reply = replies[name][i]
            row[name] = reply
            row[f"{name}_recalled"] = recalled(reply, probe)
            row[f"{name}_wrong"] = wrong_terms(reply, probe, taught)
        rows.append(row)
    return {
        "fact_probes": len(rows),
        "facts_probed": len({probe.fact for probe in probes}),
        "recall": {name: sum(1 for row in rows if row[f"{name}_recalled"]) for name in (CANDIDATE, ACTIVE)},
        "wrong_facts": {name: sum(1 for row in rows if row[f"{name}_wrong"]) for name in (CANDIDATE, ACTIVE)},
        "probes": rows,
    }


def _leak_report(unrelated: Sequence[str], replies: dict[str, list[str]], taught: set[str]) -> dict[str, Any]:
    """Unrelated answers carrying a taught term the model in service did not say."""
    leaks = []
    for question, mine, theirs in zip(unrelated, replies[CANDIDATE], replies[ACTIVE], strict=True):
        terms = leaked(mine, taught=taught, baseline=theirs, prompt=question)
        leaks.append({"question": question, CANDIDATE: mine, ACTIVE: theirs, "leaked": terms})
    return {
        "unrelated": leaks,
        "unrelated_prompts": len(leaks),
        "unrelated_leaks": sum(1 for row in leaks if row["leaked"]),
    }


# The count each check rests on: below the minimum it says "not enough data", and does not pass.
CHECK_EXAMPLES = {
    "heldout_loss_no_worse": "heldout_examples",
    "replay_f1_no_worse": "replayed",
    "replay_similarity_no_worse": "replayed",
    "taught_facts_recalled_no_worse": "fact_probes",
    "wrong_facts_no_more": "fact_probes",
    "no_taught_facts_in_unrelated": "unrelated_prompts",
}

# With approved knowledge served, what customers get: the same questions, grounded.
GROUNDED_CHECK_EXAMPLES = {
    "grounded_facts_recalled_no_worse": "grounded.fact_probes",
    "grounded_wrong_facts_no_more": "grounded.fact_probes",
    "grounded_no_taught_facts_in_unrelated": "grounded.unrelated_prompts",
}


def verdict(result: dict[str, Any], *, min_examples: int) -> tuple[dict[str, bool], list[str]]:
    """The checks an admin reads before promoting (all true: the candidate is no worse), and those
    of them resting on fewer than ``min_examples`` examples: false, whatever their figures say."""

    def no_worse(key: str, lower_is_better: bool = False, section: dict[str, Any] = result) -> bool:
        mine: float | None = section[key][CANDIDATE]
        theirs: float | None = section[key][ACTIVE]
        if mine is None or theirs is None:
            return False
        return mine <= theirs if lower_is_better else mine >= theirs

    figures = {
        "heldout_loss_no_worse": no_worse("heldout_loss", lower_is_better=True),
        "replay_f1_no_worse": no_worse("replay_f1"),
        "replay_similarity_no_worse": no_worse("replay_similarity"),
        "taught_facts_recalled_no_worse": no_worse("recall"),
        "wrong_facts_no_more": no_worse("wrong_facts", lower_is_better=True),
        "no_taught_facts_in_unrelated": result["unrelated_leaks"] == 0,
    }
    counts = dict(CHECK_EXAMPLES)
    grounded = result.get("grounded")
    if grounded is not None:
        figures |= {
            "grounded_facts_recalled_no_worse": no_worse("recall", section=grounded),
            "grounded_wrong_facts_no_more": no_worse("wrong_facts", lower_is_better=True, section=grounded),
            "grounded_no_taught_facts_in_unrelated": grounded["unrelated_leaks"][CANDIDATE] == 0,
        }
        counts |= GROUNDED_CHECK_EXAMPLES
    thin = [check for check, count in counts.items() if _count(result, count) < min_examples]
    return {check: passed and check not in thin for check, passed in figures.items()}, thin
