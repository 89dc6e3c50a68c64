"""When two answers to one question disagree: their figures differ."""

from __future__ import annotations

from conversations.knowledge.matching import answers_disagree, figures


def test_it_reads_prices_times_and_percentages() -> None:
    assert figures("From 9am to 2 pm, $4.50 or 15% off") == {"9am", "2pm", "4.50", "15%"}


def test_the_same_figures_in_other_words_agree() -> None:
    assert not answers_disagree("Gift wrapping is $4.50 per item.", "It costs 4.50 an item.")


def test_another_price_disagrees() -> None:
    assert answers_disagree("Gift wrapping is $4.50.", "Gift wrapping is $6.")


def test_a_figure_against_none_disagrees() -> None:
    assert answers_disagree("Gift wrapping is free.", "Gift wrapping costs $4.50.")


def test_answers_without_figures_agree() -> None:
    assert not answers_disagree("It is called Finch Points.", "Our programme is Finch Points.")
