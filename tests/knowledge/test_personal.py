"""Which of an answer's redactable spans are the customer's: the rest is the desk's knowledge."""

from __future__ import annotations

import pytest

from conversations.knowledge.personal import answer_redacted, spans
from finetuning.redaction import Pattern, compile_patterns, redact

CASES = [
    # (answer, what the customer wrote, what the entry keeps)
    ("Our shop is at 12 Wren Lane, Millbrook.", [], "Our shop is at 12 Wren Lane, Millbrook."),
    ("Call us on 0161 496 0000.", ["Can I phone you?"], "Call us on 0161 496 0000."),
    ("We called you on 07700 900123.", ["ring me at 07700900123"], "We called you on [phone]."),
    ("I emailed jane.doe@example.com the label.", ["I am jane.doe@example.com"], "I emailed [email] the label."),
    ("Write to help@bramble.example for returns.", ["How do I return?"], "Write to help@bramble.example for returns."),
    ("Your card 4111 1111 1111 1111 was refunded.", [], "Your card [card] was refunded."),
    ("Your IBAN GB82 WEST 1234 5698 7654 32 is noted.", [], "Your IBAN [iban] is noted."),
    ("Nothing to redact here.", ["anything"], "Nothing to redact here."),
]


@pytest.mark.parametrize(("answer", "said", "kept"), CASES)
def test_an_answer_loses_only_the_customers_data_and_every_card(answer: str, said: list[str], kept: str) -> None:
    assert answer_redacted(answer, said) == kept


def test_every_span_is_placed_where_redaction_found_it() -> None:
    text = "Mail jo@example.com or call 07700 900123 today."
    placed = spans(text, redact(text))
    assert placed is not None
    assert [(text[start:end], token) for start, end, token in placed] == [
        ("jo@example.com", "[email]"),
        ("07700 900123", "[phone]"),
    ]


def test_texts_that_cannot_be_aligned_are_redacted_whole() -> None:
    assert spans("abc", "[email] xyz") is None


def test_the_admins_patterns_still_apply_to_an_answer() -> None:
    patterns: list[Pattern] = compile_patterns([(r"ORDER-\d+", "[order]")])
    assert answer_redacted("Your ORDER-123 ships from 12 Wren Lane.", [], patterns) == (
        "Your [order] ships from 12 Wren Lane."
    )
