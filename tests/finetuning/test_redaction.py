from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from finetuning.redaction import CARD_TOKEN, EMAIL_TOKEN, PHONE_TOKEN, compile_patterns, luhn_valid, redact

LOCAL = st.from_regex(r"[a-z][a-z0-9._+-]{0,15}[a-z0-9]", fullmatch=True)
DOMAIN = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9](\.[a-z]{2,6}){1,2}", fullmatch=True)
WORDS = st.lists(st.sampled_from(["hello", "my", "order", "is", "late", "please", "help", "thanks", "the"]), max_size=8)
SEPARATOR = st.sampled_from([" ", "-", ""])


def with_luhn_digit(body: str) -> str:
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    length = draw(st.sampled_from([13, 15, 16, 19]))
    body = draw(st.text("0123456789", min_size=length - 1, max_size=length - 1))
    digits = with_luhn_digit(draw(st.sampled_from("3456")) + body[1:])
    separator = draw(SEPARATOR)
    return separator.join(digits[i : i + 4] for i in range(0, len(digits), 4))


@st.composite
def phone_numbers(draw: st.DrawFn) -> str:
    groups = draw(st.lists(st.text("0123456789", min_size=3, max_size=4), min_size=3, max_size=3))
    style = draw(st.sampled_from(["plain", "dashes", "intl", "area"]))
    if style == "dashes":
        return "-".join(groups)
    if style == "intl":
        return f"+{draw(st.integers(1, 99))} " + " ".join(groups)
    if style == "area":
        return f"({groups[0]}) {groups[1]}-{groups[2]}"
    return " ".join(groups)


def sentence(words: list[str], secret: str) -> str:
    middle = len(words) // 2
    return " ".join([*words[:middle], secret, *words[middle:]])


@given(LOCAL, DOMAIN, WORDS)
def test_it_removes_every_email_address(local: str, domain: str, words: list[str]) -> None:
    address = f"{local}@{domain}"
    redacted = redact(sentence(words, address))
    assert address not in redacted
    assert EMAIL_TOKEN in redacted
    assert "@" not in redacted


@given(card_numbers(), WORDS)
def test_it_removes_luhn_valid_card_numbers_however_they_are_spaced(card: str, words: list[str]) -> None:
    redacted = redact(sentence(words, card))
    assert CARD_TOKEN in redacted
    assert not re.search(r"\d{4}", redacted)


@given(phone_numbers(), WORDS)
def test_it_removes_phone_numbers_in_common_formats(phone: str, words: list[str]) -> None:
    redacted = redact(sentence(words, phone))
    assert PHONE_TOKEN in redacted
    assert not any(char.isdigit() for char in redacted)


@given(st.text(st.characters(blacklist_categories=("Nd",), blacklist_characters="@"), max_size=200))
def test_it_leaves_text_without_digits_or_addresses_alone(text: str) -> None:
    assert redact(text) == text


@given(st.text(max_size=200))
def test_it_is_idempotent(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


def test_it_keeps_prices_times_and_short_numbers() -> None:
    text = "Your order 1234 ships at 9:30 and costs $12.50, 3 items."
    assert redact(text) == text


def test_it_keeps_a_card_like_number_that_fails_the_luhn_check() -> None:
    assert redact("ref 4111 1111 1111 1112") == "ref 4111 1111 1111 1112"


def test_it_applies_admin_patterns_and_skips_broken_ones() -> None:
    patterns = compile_patterns([(r"ORD-\d+", "[order]"), (r"([unclosed", "x")])
    assert redact("about ORD-99812 please", patterns) == "about [order] please"


def test_it_reads_enabled_admin_patterns_from_the_database(db: object) -> None:
    from finetuning.models import RedactionPattern
    from finetuning.redaction import admin_patterns

    RedactionPattern.objects.create(name="order", pattern=r"ORD-\d+", replacement="[order]")
    RedactionPattern.objects.create(name="off", pattern=r"secret", enabled=False)
    assert redact("ORD-1 secret", admin_patterns()) == "[order] secret"
