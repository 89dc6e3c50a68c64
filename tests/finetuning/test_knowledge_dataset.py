"""The dataset build's knowledge half: each correction under many phrasings, and examples whose
system prompt carries retrieved entries built as serving builds them (RAFT). The rewordings are
scripted here; MiniLM, which decides which are kept, is the real one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from conversations.prompts import system_prompt_with
from finetuning.datasets import BuildOptions, snapshot_build, split_of
from finetuning.models import Example

from .conftest import chat, correct

SYSTEM = "You are the assistant of Bramble & Finch."
TAUGHT = [
    ("How much is gift wrapping?", "It is free.", "Gift wrapping costs $4.50 per item."),
    ("When are you open on Saturdays?", "24 hours a day.", "On Saturdays we are open from 9am to 2pm."),
    ("Do you have a shop cat?", "No pets.", "Yes, our shop cat is called Pickle."),
    ("How long do I have to return something?", "14 days.", "You can return items within 45 days of delivery."),
]
DRAFTS = {
    "How much is gift wrapping?": [
        "What does it cost to have a present gift wrapped?",  # kept
        "When are you open on a Saturday?",  # nearer another fact: dropped
        "How much is gift wrapping?",  # its own words: dropped
        "Tell me a joke about penguins.",  # asks something else: dropped
    ],
}


def taught(customer: Any) -> None:
    for question, wrong, correction in TAUGHT:
        _, bad = chat(customer, [("customer", question), ("bot", wrong)])
        correct(bad, correction)


def scripted(asked: list[Sequence[str]]) -> Any:
    def rephrase(questions: Sequence[str]) -> list[list[str]]:
        asked.append(list(questions))
        return [list(DRAFTS.get(q, [])) for q in questions]

    return rephrase


def build(tokenizer: Any, rephrase: Any = None, **options: Any) -> Any:
    values: dict[str, Any] = {"system_prompt": SYSTEM, "heldout_fraction": 0.0, "general_examples": 0}
    values.update(options)
    return snapshot_build(tokenizer=tokenizer, options=BuildOptions(**values), rephrase=rephrase)


def last_question(example: Example) -> str:
    return next(m["content"] for m in reversed(example.chat) if m["role"] == "user")


def test_it_keeps_only_the_phrasings_retrieval_maps_back_to_their_own_question(customer: Any, tokenizer: Any) -> None:
    taught(customer)
    asked: list[Sequence[str]] = []
    snapshot = build(tokenizer, scripted(asked), paraphrases=4)
    assert asked == [[question for question, _, _ in TAUGHT]]
    [phrased] = snapshot.examples.filter(source=Example.Source.PARAPHRASE)
    assert last_question(phrased) == "What does it cost to have a present gift wrapped?"
    original = snapshot.examples.get(source=Example.Source.CORRECTION, reply=phrased.reply)
    assert (phrased.rejected, phrased.message_ids, phrased.conversation_id) == (
        original.rejected,
        original.message_ids,
        original.conversation_id,
    )
    assert phrased.augmentation == {"phrasing_of": "How much is gift wrapping?"}
    assert original.augmentation == {"phrasings": 1}
    counts = snapshot.counts["phrasings"]
    assert (counts["questions"], counts["drafts"], counts["kept"]) == (4, 4, 1)
    assert counts["questions_by_phrasings"] == {"0": 3, "1": 1}


def test_zero_phrasings_turns_the_rewording_off(customer: Any, tokenizer: Any) -> None:
    taught(customer)
    asked: list[Sequence[str]] = []
    snapshot = build(tokenizer, scripted(asked), paraphrases=0)
    assert asked == []
    assert not snapshot.examples.filter(source=Example.Source.PARAPHRASE).exists()


def test_every_phrasing_of_a_conversation_stays_on_its_side_of_the_split(customer: Any, tokenizer: Any) -> None:
    # At least 8 conversations, and until both sides of the split hold one: the split hashes random
    # conversation ids, and 8 of them all fell on one side in CI (1 run in 128).
    sides: set[str] = set()
    made = 0
    while made < 8 or len(sides) < 2:
        _, bad = chat(customer, [("customer", "How much is gift wrapping?"), ("bot", "Free.")])
        correct(bad, "Gift wrapping costs $4.50 per item.")
        sides.add(split_of(str(bad.conversation_id), 0.5))
        made += 1
    snapshot = build(tokenizer, scripted([]), paraphrases=4, heldout_fraction=0.5, max_examples_per_customer=100)
    splits: dict[str, set[str]] = {}
    for example in snapshot.examples.all():
        splits.setdefault(example.conversation_id, set()).add(example.split)
    assert snapshot.examples.filter(source=Example.Source.PARAPHRASE).count() == made
    assert all(len(found) == 1 for found in splits.values())
    assert set(snapshot.counts["by_split"]) == {"train", "heldout"}


def test_references_are_the_serving_block_with_the_right_entry_among_the_nearest(customer: Any, tokenizer: Any) -> None:
    taught(customer)
    snapshot = build(tokenizer, raft_with_answer=1.0, references_top_k=3)
    for example in snapshot.examples.all():
        system = example.chat[0]["content"]
        assert system.startswith(system_prompt_with(SYSTEM, []) + "\n\nReference facts approved by the support team.")
        assert f"Q: {last_question(example)}\nA: {example.reply}" in system  # its own entry
        assert system.count("\nQ: ") == 3 and example.augmentation == {"references": "answer", "entries": 3}
        assert example.completion.startswith(example.reply)
    assert snapshot.counts["references"] == {"answer": 4}


def test_distractors_only_keep_the_taught_reply_and_hold_no_entry_of_its_own(customer: Any, tokenizer: Any) -> None:
    taught(customer)
    snapshot = build(tokenizer, raft_distractors_only=1.0, references_top_k=2)
    for example in snapshot.examples.all():
        system = example.chat[0]["content"]
        assert example.reply not in system and system.count("\nQ: ") == 2
        assert example.completion.startswith(example.reply)
    assert snapshot.counts["references"] == {"distractors": 4}


def test_shares_split_the_examples_and_held_out_ones_carry_no_references(customer: Any, tokenizer: Any) -> None:
    for number in range(30):
        question, wrong, correction = TAUGHT[number % len(TAUGHT)]
        _, bad = chat(customer, [("customer", question), ("bot", wrong)])
        correct(bad, correction)
    snapshot = build(
        tokenizer, raft_with_answer=0.4, raft_distractors_only=0.3, heldout_fraction=0.3, max_examples_per_customer=100
    )
    kinds = [e.augmentation.get("references", "") for e in snapshot.examples.filter(split="train")]
    assert {"answer", "distractors", ""} <= set(kinds)
    assert all("references" not in e.augmentation for e in snapshot.examples.filter(split="heldout"))
    assert all("Reference facts" not in e.prompt for e in snapshot.examples.filter(split="heldout"))


@pytest.mark.model
def test_the_base_model_rewords_corrected_questions_in_a_real_build(
    customer: Any, tokenizer: Any, model_path: str, torch_threads: None, settings: Any, tmp_path: Any
) -> None:
    from finetuning.base import load_model
    from finetuning.datasets import model_rephrase

    settings.FINETUNING_CACHE_DIR = str(tmp_path)
    taught(customer)
    loads: list[int] = []

    def load() -> Any:
        loads.append(1)
        return load_model(model_path)

    rephrase = model_rephrase(model_path=model_path, tokenizer=tokenizer, per_question=6, load=load)
    snapshot = build(tokenizer, rephrase, paraphrases=6)
    phrased = list(snapshot.examples.filter(source=Example.Source.PARAPHRASE))
    assert snapshot.counts["phrasings"]["drafts"] == 24
    assert len(phrased) >= 2, snapshot.counts["phrasings"]
    questions = {q for q, _, _ in TAUGHT}
    for example in phrased:
        assert example.augmentation["phrasing_of"] in questions
        assert last_question(example) not in questions
    again = build(tokenizer, rephrase, paraphrases=6)  # from the cache: the model is not loaded again
    assert loads == [1] and again.content_hash == snapshot.content_hash
