"""The evaluation asks its probes twice when approved knowledge is served: with the adapter alone,
and grounded as the worker grounds them (references in the prompt, a clear best entry leading the
answer). The real SmolLM2 answers; the grounding is a table, so the figures are the model's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conversations.prompts import Reference
from finetuning import evaluation, probes
from finetuning.evaluation import GROUNDED_CHECK_EXAMPLES, verdict

from .shop import FACTS
from .test_evaluation import report as ungrounded_report

PERSONA = "You are the assistant of Bramble & Finch, a homeware shop. Answer briefly."
TAUGHT = probes.taught_terms([f.correction for f in FACTS[:4]], ["Hello! How can I help?"])


def report(n: int, grounded: dict[str, Any] | None = None) -> dict[str, Any]:
    """An evaluation whose every check rests on ``n`` examples and passes; with ``grounded``, its
    grounded section too, but for those figures."""
    result = ungrounded_report(n)
    if grounded is not None:
        result["grounded"] = {
            "recall": {"candidate": 9, "active": 9},
            "wrong_facts": {"candidate": 0, "active": 0},
            "unrelated_leaks": {"candidate": 0, "active": 0},
            "fact_probes": n,
            "unrelated_prompts": n,
        } | grounded
    return result


def test_without_knowledge_served_there_are_no_grounded_checks() -> None:
    checks, _ = verdict(report(10), min_examples=5)
    assert not set(checks) & set(GROUNDED_CHECK_EXAMPLES)


def test_grounded_checks_pass_only_when_the_candidate_is_no_worse_with_knowledge() -> None:
    checks, thin = verdict(report(10, {}), min_examples=5)
    assert all(checks[c] for c in GROUNDED_CHECK_EXAMPLES) and thin == []
    checks, _ = verdict(report(10, {"recall": {"candidate": 7, "active": 9}}), min_examples=5)
    assert not checks["grounded_facts_recalled_no_worse"]
    checks, _ = verdict(report(10, {"wrong_facts": {"candidate": 1, "active": 0}}), min_examples=5)
    assert not checks["grounded_wrong_facts_no_more"]
    checks, _ = verdict(report(10, {"unrelated_leaks": {"candidate": 1, "active": 1}}), min_examples=5)
    assert not checks["grounded_no_taught_facts_in_unrelated"]
    checks, thin = verdict(report(10, {"fact_probes": 2}), min_examples=5)
    assert "grounded_facts_recalled_no_worse" in thin and not checks["grounded_facts_recalled_no_worse"]


@pytest.mark.model
def test_the_real_model_answers_probes_grounded_and_alone(
    tmp_path: Path, tokenizer: Any, model_path: str, torch_threads: None
) -> None:
    from peft import LoraConfig, get_peft_model

    from finetuning.base import load_model

    adapter = tmp_path / "adapter"  # an adapter that learnt nothing: it answers as the base model
    get_peft_model(load_model(model_path), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(
        adapter
    )
    contenders = evaluation.Contenders(load_model(model_path), str(adapter), None)
    facts = [probes.TaughtFact(f.asked[0], f.correction, f"c{i}") for i, f in enumerate(FACTS[:4])]
    probe_list = probes.fact_probes(facts, [[f.paraphrase] for f in FACTS[:4]], TAUGHT)
    entries = {f.paraphrase: Reference(i, f.asked[0], f.correction, 0.8) for i, f in enumerate(FACTS[:4])}
    led = {FACTS[0].paraphrase, FACTS[1].paraphrase}  # the others only in the prompt

    def ground(question: str) -> tuple[list[Reference], str]:
        reference = entries.get(question)
        if reference is None:
            return [], ""
        return [reference], reference.answer if question in led else ""

    result = evaluation.evaluate(
        contenders=contenders,
        tokenizer=tokenizer,
        heldout=[],
        taught=TAUGHT,
        probes=probe_list,
        unrelated=["Hello!", "What is the capital of France?"],
        system_prompt=PERSONA,
        max_seq_len=256,
        max_new_tokens=24,
        max_replays=0,
        min_examples=1,
        ground=ground,
    )
    grounded = result["grounded"]
    assert result["retrieval"] == "on" and grounded["fact_probes"] == len(probe_list) == 4
    assert grounded["grounded"] == {"probes": 4, "unrelated": 0} and grounded["led"] == {"probes": 2, "unrelated": 0}
    rows = {row["question"]: row for row in grounded["probes"]}
    for question in led:  # a led answer starts with the approved answer, whatever the model adds
        assert rows[question]["candidate"].startswith(entries[question].answer) and rows[question]["candidate_recalled"]
    assert grounded["recall"]["candidate"] >= 2 and grounded["recall"]["candidate"] >= result["recall"]["candidate"]
    assert grounded["unrelated_leaks"] == {"candidate": 0, "active": 0}
    assert set(GROUNDED_CHECK_EXAMPLES) <= set(result["checks"]) and set(result["check_examples"]) >= set(
        GROUNDED_CHECK_EXAMPLES
    )
