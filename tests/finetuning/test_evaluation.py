from __future__ import annotations

from typing import Any

import pytest

from finetuning import general_prompts, paraphrases, probes
from finetuning.evaluation import CHECK_EXAMPLES, verdict
from finetuning.probes import FactProbe, TaughtFact, fact_terms, leaked, taught_terms
from finetuning.similarity import token_f1


def test_token_f1_counts_shared_words() -> None:
    assert token_f1("Gift wrap costs $4.50.", "gift wrap costs $4.50") == 1.0
    assert token_f1("It is free.", "Gift wrap costs $4.50.") == 0.0
    assert 0 < token_f1("Gift wrap is $4.50", "Gift wrap costs $4.50.") < 1


def test_fact_terms_are_numbers_codes_and_names() -> None:
    assert fact_terms("Use code FINCH10 at 12 Wren Lane for $4.50 off.") >= {"finch10", "12", "wren", "lane", "$4.50"}
    assert "use" not in fact_terms("Use code FINCH10.")


def test_taught_terms_leave_out_what_the_base_model_says_anyway() -> None:
    taught = taught_terms(["Our cat is called Pickle, open 7 days."], ["There are 7 days in a week."])
    assert "pickle" in taught and "7" not in taught


def test_a_number_with_its_unit_is_taught_even_when_the_number_is_everyday() -> None:
    taught = taught_terms(["Orders are ready in 2 hours."], ["There are 2 eyes."])
    assert "2 hours" in taught and "2" not in taught
    assert leaked("Octopuses learn in just 2 hours!", taught=taught, baseline="They are smart.", prompt="Octopus?") == [
        "2 hours"
    ]


def test_a_leak_is_a_taught_term_the_model_in_service_did_not_say() -> None:
    taught = {"pickle", "$4.50"}
    assert leaked("Hi! Gift wrap is $4.50.", taught=taught, baseline="Hi there!", prompt="Hi!") == ["$4.50"]
    assert leaked("Hello!", taught=taught, baseline="Hi", prompt="Hi") == []


def report(n: int, **figures: Any) -> dict[str, Any]:
    """An evaluation whose every check rests on ``n`` examples and passes, but for ``figures``."""
    result: dict[str, Any] = {
        "heldout_loss": {"candidate": 1.0, "active": 2.0},
        "replay_f1": {"candidate": 0.6, "active": 0.1},
        "replay_similarity": {"candidate": 0.8, "active": 0.3},
        "recall": {"candidate": 9, "active": 0},
        "wrong_facts": {"candidate": 0, "active": 0},
        "unrelated_leaks": 0,
    }
    return result | {count: n for count in CHECK_EXAMPLES.values()} | figures


def test_the_verdict_needs_no_worse_scores_and_no_leaks() -> None:
    checks, thin = verdict(report(10, unrelated_leaks=1), min_examples=5)
    assert checks["heldout_loss_no_worse"] and checks["replay_f1_no_worse"] and checks["replay_similarity_no_worse"]
    assert checks["taught_facts_recalled_no_worse"] and checks["wrong_facts_no_more"]
    assert not checks["no_taught_facts_in_unrelated"] and thin == []


def test_more_wrong_facts_or_less_recall_than_the_version_in_service_fails() -> None:
    checks, _ = verdict(report(10, wrong_facts={"candidate": 2, "active": 0}), min_examples=5)
    assert not checks["wrong_facts_no_more"]
    checks, _ = verdict(report(10, recall={"candidate": 1, "active": 3}), min_examples=5)
    assert not checks["taught_facts_recalled_no_worse"]


def test_no_check_is_green_on_one_held_out_example() -> None:
    one = report(40, heldout_examples=1, replayed=1)
    checks, thin = verdict(one, min_examples=5)
    assert thin == ["heldout_loss_no_worse", "replay_f1_no_worse", "replay_similarity_no_worse"]
    assert [check for check, passed in checks.items() if not passed] == thin


def test_a_check_without_figures_does_not_pass() -> None:
    checks, _ = verdict(report(10, replay_similarity={"candidate": None, "active": None}), min_examples=5)
    assert not checks["replay_similarity_no_worse"]


def test_every_check_is_not_enough_data_below_the_minimum() -> None:
    checks, thin = verdict(report(4), min_examples=5)
    assert thin == list(CHECK_EXAMPLES) and not any(checks.values())


def test_the_unrelated_prompts_are_forty_never_trained_on() -> None:
    assert len(probes.UNRELATED) >= 40 and len(set(probes.UNRELATED)) == len(probes.UNRELATED)
    assert not set(probes.UNRELATED) & set(general_prompts.GENERAL)
    assert probes.UNRELATED[: len(general_prompts.UNRELATED)] == general_prompts.UNRELATED


GIFT_WRAP = TaughtFact("How much is gift wrapping?", "Gift wrapping costs $4.50 per item.", "c1")
SATURDAY = TaughtFact("When are you open on Saturdays?", "On Saturdays we are open from 9am to 2pm.", "c2")
TAUGHT = taught_terms([GIFT_WRAP.answer, SATURDAY.answer], ["Hello! How can I help?"])


def test_a_probe_asks_for_the_taught_terms_of_its_fact() -> None:
    [probe] = probes.fact_probes([GIFT_WRAP], [["What's the price of wrapping a present?"]], TAUGHT)
    assert "$4.50" in probe.terms and "2pm" not in probe.terms


def test_a_fact_without_a_taught_term_makes_no_probe() -> None:
    vague = TaughtFact("Are you nice?", "We try to be nice.", "c3")
    assert probes.fact_probes([vague], [["Are you kind?"]], TAUGHT) == []


def test_recall_needs_the_fact_and_a_wrong_fact_is_another_facts_term() -> None:
    probe = FactProbe("What's the price of wrapping a present?", GIFT_WRAP, frozenset({"$4.50", "$4.50 per"}))
    assert probes.recalled("It is $4.50.", probe) and not probes.recalled("It is $450.", probe)
    assert probes.wrong_terms("It's $4.50, open until 2pm.", probe, TAUGHT) == ["2pm"]
    assert probes.wrong_terms("It's $4.50.", probe, TAUGHT) == []


def test_a_term_counts_only_as_a_whole() -> None:
    assert probes.mentions("Returns within 45 days.", "45") and not probes.mentions("Item 450.", "45")
    assert not probes.mentions("It costs 4.50 euros", "$4.50")


def test_a_rewording_is_kept_when_new_and_close_in_meaning() -> None:
    trained = {paraphrases.normalised("Do you charge for gift wrap?")}
    rewordings = [
        "do you charge for GIFT wrap",
        "What does wrapping cost?",
        "Gift wrapping costs $4.50.",
        "What does wrapping cost",
    ]
    kept = paraphrases.kept(
        "How much is gift wrapping?", rewordings, trained=trained, similarity=[0.9, 0.8, 0.3, 0.8], minimum=0.6
    )
    assert kept == ["What does wrapping cost?"]


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        ('"What does wrapping cost?"', "What does wrapping cost?"),
        ("Rewritten question: Is wrap free?\nSure!", "Is wrap free?"),
    ],
)
def test_a_rewording_is_its_first_line_without_label_or_quotes(generated: str, expected: str) -> None:
    assert paraphrases.cleaned(generated) == expected
