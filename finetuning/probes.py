"""What the evaluation asks a version, and how its answers are scored. No torch here.

Two kinds of probe. For every taught fact (a correction in the training split of the snapshot),
questions in words it was not trained on (finetuning/paraphrases.py): the answer should carry the
fact's key terms (recall) and no other fact's (a wrong fact). And ``UNRELATED``, fixed prompts no
build trains on, small talk and the other things a shop is asked: no taught term belongs in their
answers (a leak). Every figure comes with the number of probes it rests on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import general_prompts

# Numbers, prices, codes, and capitalised words inside a sentence: what a taught fact is made of.
TERM = re.compile(r"[$€£]?\d[\w.,:%-]*\w|[$€£]?\d|(?<=[a-z0-9,;] )[A-Z][\w'-]+")
# A number with the word after it ("2 hours", "45 days"): a bare "2" is everyday, "2 hours" is taught.
QUANTITY = re.compile(r"[$€£]?\d[\w.,:%-]*\s[a-z]+")

# Support questions a shop gets that no shop fact answers: where a taught deadline or price would
# be most tempting to borrow.
OTHER_SUPPORT = [
    "How do I change the delivery address on my account?",
    "Can I update my email address?",
    "I forgot my password, what should I do?",
    "Do you have a physical catalogue?",
    "Can you recommend something for a housewarming?",
    "Is my payment information stored safely?",
    "How do I unsubscribe from your newsletter?",
    "Can I leave a review of a product?",
    "Which payment cards do you accept?",
    "My parcel arrived damaged, who do I contact?",
    "Can I order by phone?",
    "Do you sell gift cards?",
    "Can I cancel an order I just placed?",
    "Are your candles safe for pets?",
    "How do I track my order?",
]

# Small talk beyond general_prompts.UNRELATED, none of it in general_prompts.GENERAL (trained on).
SMALL_TALK = [
    "Good evening!",
    "How's your day going?",
    "What's your favourite colour?",
    "Do you like music?",
    "What is 9 times 6?",
    "Which ocean is the biggest?",
    "How many legs does a spider have?",
    "What's a good houseplant for beginners?",
    "Can you tell me a riddle?",
    "What is the tallest mountain in the world?",
    "How do I make pancakes?",
    "Who invented the telephone?",
    "What is the chemical symbol for gold?",
    "Any tips for a first job interview?",
    "Thanks, bye for now!",
]

UNRELATED = [*general_prompts.UNRELATED, *SMALL_TALK, *OTHER_SUPPORT]


@dataclass(frozen=True)
class TaughtFact:
    """A correction the adapter trained on: the customer's question and the agent's answer."""

    question: str
    answer: str
    conversation_id: str


@dataclass(frozen=True)
class FactProbe:
    """A question in new words whose answer should carry ``terms`` (the fact's key terms)."""

    question: str
    fact: TaughtFact
    terms: frozenset[str]


def fact_terms(text: str) -> set[str]:
    terms = TERM.findall(text) + QUANTITY.findall(text)
    return {term.lower().rstrip(".,") for term in terms}


def taught_terms(taught_replies: Sequence[str], general_replies: Sequence[str]) -> set[str]:
    """Fact-like terms of the taught replies that the base model's general chat never uses."""
    everyday = set().union(*(fact_terms(r) for r in general_replies)) if general_replies else set()
    return set().union(*(fact_terms(r) for r in taught_replies)) - everyday if taught_replies else set()


def leaked(reply: str, *, taught: set[str], baseline: str, prompt: str) -> list[str]:
    """Taught terms in ``reply`` that neither the prompt nor the model in service's reply contains."""
    return sorted((fact_terms(reply) & taught) - fact_terms(baseline) - fact_terms(prompt))


def mentions(text: str, term: str) -> bool:
    """``term`` in ``text`` as a whole: "45" is not in "450", "$4.50" is in "costs $4.50."."""
    return re.search(rf"(?<![\w$€£]){re.escape(term)}(?!\w)", text.lower()) is not None


def fact_probes(facts: Sequence[TaughtFact], paraphrased: Sequence[Sequence[str]], taught: set[str]) -> list[FactProbe]:
    """One probe per kept paraphrase of each fact; a fact without a taught term has nothing to recall."""
    probes = []
    for fact, questions in zip(facts, paraphrased, strict=True):
        terms = frozenset(fact_terms(fact.answer) & taught)
        probes += [FactProbe(question, fact, terms) for question in questions if terms]
    return probes


def recalled(reply: str, probe: FactProbe) -> bool:
    """Any of the fact's key terms, as in a person's reading: "$4.50" alone answers the price."""
    return any(mentions(reply, term) for term in probe.terms)


def wrong_terms(reply: str, probe: FactProbe, taught: Iterable[str]) -> list[str]:
    """Terms of other taught facts in the answer: another price, another weekday range, blended in."""
    others = set(taught) - probe.terms - fact_terms(probe.question)
    return sorted(term for term in others if mentions(reply, term))
