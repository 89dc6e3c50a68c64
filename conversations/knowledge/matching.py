"""When two answers to one question disagree: pure, no Django.

The facts a small model gets wrong are figures (prices, days, times, percentages, counts), so two
answers disagree when the figures they state differ. Wording alone never makes a conflict: "Gift
wrapping is $4.50 per item" and "It costs $4.50 an item" are the same answer.
"""

from __future__ import annotations

import re

# 4.50, $4.50, 9am, 2 pm, 15%, 3-year, 1987: a number and the unit glued to it.
FIGURE = re.compile(r"\d+(?:[.,]\d+)?\s?(?:am|pm|%)?", re.IGNORECASE)


def figures(text: str) -> frozenset[str]:
    return frozenset(re.sub(r"\s", "", match).lower().replace(",", ".") for match in FIGURE.findall(text))


def answers_disagree(first: str, second: str) -> bool:
    """Whether the two answers state different figures (one stating none counts as different)."""
    return figures(first) != figures(second)
