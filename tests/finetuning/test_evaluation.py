from __future__ import annotations

from finetuning.evaluation import fact_terms, leaked, taught_terms, verdict
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


def test_the_verdict_needs_no_worse_scores_and_no_leaks() -> None:
    result = {
        "heldout_loss": {"candidate": 1.0, "active": 2.0},
        "replay_f1": {"candidate": 0.6, "active": 0.1},
        "replay_similarity": {"candidate": None, "active": None},
        "unrelated_leaks": 1,
    }
    checks = verdict(result)
    assert checks["heldout_loss_no_worse"] and checks["replay_f1_no_worse"] and checks["replay_similarity_no_worse"]
    assert not checks["no_taught_facts_in_unrelated"]
