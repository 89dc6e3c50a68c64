"""What of an agent's answer is personal data before it enters knowledge.

A customer's words (the question) are redacted whole, as everywhere. An answer is the desk's own
knowledge: the shop's address, its founder's name, its support line are what it teaches, and
redacting them would teach "[address]". So an answer loses what redaction finds only when it is
the customer's: a span whose distinctive words or digits the customer wrote in the conversation,
and always card numbers, IBANs and national ids, which are nobody's shop facts. A person reads every
suggestion before it serves (docs/knowledge.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from finetuning.redaction import CARD_TOKEN, IBAN_TOKEN, ID_TOKEN, Pattern, apply_patterns, redact

TOKEN = re.compile(r"\[(?:email|card|phone|iban|id|address|postcode|name)\]")
ALWAYS = frozenset({CARD_TOKEN, IBAN_TOKEN, ID_TOKEN})

# Words an address shares with any other: they say nothing about whose it is.
GENERIC = frozenset({"street", "road", "lane", "avenue", "the", "and", "flat", "apartment", "suite"})
DISTINCTIVE = re.compile(r"\d{3,}|[^\W\d_]{3,}")


def distinctive(text: str) -> set[str]:
    """The words (three letters or more, not generic) and digit runs of ``text``, lower case."""
    compact = re.sub(r"(?<=\d)[ .\-/()]+(?=\d)", "", text)  # "0161 496 0000" is one run
    return {token.lower() for token in DISTINCTIVE.findall(compact)} - GENERIC


def spans(original: str, redacted: str) -> list[tuple[int, int, str]] | None:
    """Where each placeholder of ``redacted`` stands in ``original``: (start, end, token), with
    adjacent placeholders (two or fewer characters between) taken as one span holding the first
    token kept always, if any; None when the texts cannot be aligned."""
    parts = TOKEN.split(redacted)
    tokens = TOKEN.findall(redacted)
    if not original.startswith(parts[0]):
        return None
    found: list[tuple[int, int, str]] = []
    position = len(parts[0])
    for token, segment in zip(tokens, parts[1:], strict=True):
        end = original.find(segment, position + 1) if segment else len(original)
        if segment and len(segment.strip()) <= 2 and segment is not parts[-1]:
            end = -2  # too short to place: joined with the next placeholder below
        if end == -1:
            return None
        if found and found[-1][1] == -2:
            start, _, previous = found.pop()
            token = previous if previous in ALWAYS else token
        else:
            start = position
        if end == -2:
            found.append((start, -2, token))
            continue
        found.append((start, end, token))
        position = end + len(segment)
    if found and found[-1][1] == -2:
        return None
    return found if position == len(original) or not parts[-1] else None


def answer_redacted(text: str, said: Sequence[str], patterns: Iterable[Pattern] = ()) -> str:
    """``text`` (an answer) with the personal data the customer gave (``said``: their messages)
    and every card, IBAN and id redacted; the rest of what redaction would take is kept."""
    redacted = redact(text)
    if redacted == text:
        return apply_patterns(text, patterns)
    placed = spans(text, redacted)
    if placed is None:  # cannot tell which is which: redact it all
        return apply_patterns(redacted, patterns)
    theirs = set().union(*(distinctive(line) for line in said)) if said else set()
    out, position = [], 0
    for start, end, token in placed:
        original = text[start:end]
        mine = token in ALWAYS or bool(distinctive(original) & theirs)
        out += [text[position:start], token if mine else original]
        position = end
    out.append(text[position:])
    return apply_patterns("".join(out), patterns)
