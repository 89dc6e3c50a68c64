"""Personal data out of training text: e-mail addresses, phone numbers, card numbers, admin patterns.

Order matters: e-mail first (its local part may hold digits), then card numbers (a Luhn-valid run
of 13 to 19 digits), then phone numbers (7 to 15 digits), then the patterns an admin added.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

EMAIL = re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")
# Digits in groups separated by single spaces or dashes, as cards are usually typed.
CARD = re.compile(r"(?<![\w+])\d(?:[ -]?\d){12,18}(?!\w)")
# An optional +country code, an optional (area code), then groups of digits.
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,}(?:[ .-]?\d{2,}){0,5}(?!\w)")

EMAIL_TOKEN = "[email]"
CARD_TOKEN = "[card]"
PHONE_TOKEN = "[phone]"


@dataclass(frozen=True)
class Pattern:
    regex: re.Pattern[str]
    replacement: str


def luhn_valid(digits: str) -> bool:
    """The checksum every payment card number carries in its last digit."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


def _card(match: re.Match[str]) -> str:
    digits = _digits(match.group())
    return CARD_TOKEN if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group()


def _phone(match: re.Match[str]) -> str:
    return PHONE_TOKEN if 7 <= len(_digits(match.group())) <= 15 else match.group()


def compile_patterns(rows: Iterable[tuple[str, str]]) -> list[Pattern]:
    """(regex, replacement) pairs; an invalid regex is skipped rather than stopping a build."""
    compiled = []
    for regex, replacement in rows:
        try:
            compiled.append(Pattern(re.compile(regex), replacement))
        except re.error:
            continue
    return compiled


def redact(text: str, extra: Iterable[Pattern] = ()) -> str:
    text = EMAIL.sub(EMAIL_TOKEN, text)
    text = CARD.sub(_card, text)
    text = PHONE.sub(_phone, text)
    for pattern in extra:
        text = pattern.regex.sub(pattern.replacement, text)
    return text


def admin_patterns() -> list[Pattern]:
    """The enabled patterns from the database."""
    from .models import RedactionPattern

    rows = RedactionPattern.objects.filter(enabled=True).values_list("pattern", "replacement")
    return compile_patterns(rows)
