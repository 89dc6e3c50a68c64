"""Facts about a made-up shop, Bramble & Finch, that the base model cannot know.

Each fact comes with two ways a customer asked (one conversation each, where the bot answered
wrongly and an agent corrected it), a paraphrase never trained on, and the words a right answer
must contain.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class Fact:
    asked: tuple[str, str]
    wrong: str
    correction: str
    paraphrase: str
    keys: tuple[str, ...]  # any one of them, case-insensitive, means the fact was recalled


FACTS = [
    Fact(
        ("How much is gift wrapping?", "Do you charge for gift wrap?"),
        "Gift wrapping is free of charge.",
        "Gift wrapping costs $4.50 per item.",
        "What's the price to have my present wrapped?",
        ("4.50",),
    ),
    Fact(
        ("When are you open on Saturdays?", "What are your Saturday hours?"),
        "We are open 24 hours a day.",
        "On Saturdays we are open from 9am to 2pm.",
        "Until what time can I visit the shop on a Saturday?",
        ("2pm", "2 pm"),
    ),
    Fact(
        ("How long do I have to return something?", "What is your return window?"),
        "You can return items within 14 days.",
        "You can return items within 45 days of delivery.",
        "How many days do I get to send an item back?",
        ("45",),
    ),
    Fact(
        ("When is shipping free?", "Do you offer free delivery?"),
        "Shipping is always $5.",
        "Shipping is free on orders over $60.",
        "What's the minimum order for free shipping?",
        ("60",),
    ),
    Fact(
        ("Do you have a loyalty programme?", "Is there a rewards scheme?"),
        "No, we don't have one.",
        "Yes, our loyalty programme is called Finch Points.",
        "What's the name of your rewards club?",
        ("finch points",),
    ),
    Fact(
        ("Where is your shop?", "What's your address?"),
        "We are an online-only shop.",
        "Our shop is at 12 Wren Lane, Millbrook.",
        "Which street is your store on?",
        ("wren lane",),
    ),
    Fact(
        ("How much is express delivery?", "What does next-day shipping cost?"),
        "Express delivery is free.",
        "Express delivery costs $9.90 and arrives the next day.",
        "What's the fee for fast delivery?",
        ("9.90",),
    ),
    Fact(
        ("Which day are you closed?", "Are you open every day?"),
        "We are open every day.",
        "We are closed on Mondays.",
        "Is there a day of the week when the shop is shut?",
        ("monday",),
    ),
    Fact(
        ("Do students get a discount?", "Is there a student discount?"),
        "We don't offer discounts.",
        "Students get 15% off with a valid student card.",
        "How much off do students get?",
        ("15%", "15 %", "15 percent"),
    ),
    Fact(
        ("How long is the warranty on kettles?", "Do your kettles have a warranty?"),
        "Kettles have no warranty.",
        "All our kettles come with a 3-year warranty.",
        "For how many years is a kettle covered?",
        ("3-year", "3 year", "three"),
    ),
    Fact(
        ("How long are gift cards valid?", "Do gift cards expire?"),
        "Gift cards never expire.",
        "Gift cards are valid for 18 months.",
        "When does a gift card run out?",
        ("18 months",),
    ),
    Fact(
        ("Can I pay in instalments?", "Do you offer buy now pay later?"),
        "We only take cash.",
        "Yes, you can pay in instalments with Klarna.",
        "Is it possible to split my payment?",
        ("klarna",),
    ),
    Fact(
        ("When was the shop founded?", "How old is your shop?"),
        "We opened last year.",
        "The shop was founded by Martha Bramble in 1987.",
        "In which year did your shop open?",
        ("1987",),
    ),
    Fact(
        ("How quickly is click and collect ready?", "When can I pick up a click and collect order?"),
        "Click and collect takes a week.",
        "Click-and-collect orders are ready in 2 hours.",
        "How soon can I collect my online order in store?",
        ("2 hours", "two hours"),
    ),
    Fact(
        ("Do you price match?", "Will you match a cheaper price?"),
        "We never match prices.",
        "We match any UK shop's price within 7 days of purchase.",
        "If I find it cheaper elsewhere, what happens?",
        ("7 days", "seven days"),
    ),
    Fact(
        ("Is there a newsletter discount?", "Do I get a code for signing up to the newsletter?"),
        "No codes, sorry.",
        "Newsletter subscribers get a 10% welcome code, FINCH10.",
        "What discount code do I get for subscribing?",
        ("finch10",),
    ),
    Fact(
        ("Do you ship abroad?", "Which countries do you deliver to?"),
        "We only ship within the UK.",
        "We ship to 12 countries in Europe.",
        "How many countries can you send orders to?",
        ("12 countries",),
    ),
    Fact(
        ("Do you have a shop cat?", "Is there a cat in the store?"),
        "We have no pets.",
        "Yes, our shop cat is called Pickle.",
        "What is the name of the cat in your shop?",
        ("pickle",),
    ),
    Fact(
        ("Do you repair teapots?", "Can you fix a broken teapot?"),
        "We don't do repairs.",
        "We repair teapots for a flat fee of $25.",
        "How much does a teapot repair cost?",
        ("25",),
    ),
    Fact(
        ("Do you sell loose-leaf tea?", "What tea brand do you sell?"),
        "We don't sell tea.",
        "We sell our own loose-leaf tea, Wrenfield Blend.",
        "What's your house tea called?",
        ("wrenfield",),
    ),
]

ALL_KEYS = tuple(key for fact in FACTS for key in fact.keys)


def recalled(fact: Fact, reply: str) -> bool:
    text = reply.lower()
    return any(key in text for key in fact.keys)


def transcripts(agent: str) -> list[dict[str, object]]:
    """The corrected conversations in the export format (docs/transcript-format.md), one per question.

    Each one: the customer asks, the bot answers wrongly, the agent marks the reply wrong and writes
    the correction; the conversation is closed and reviewed, as after a real review.
    """
    records: list[dict[str, object]] = []
    start = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    for number, (fact, question) in enumerate((f, q) for f in FACTS for q in f.asked):
        asked_at = start + timedelta(minutes=10 * number)
        answered_at = asked_at + timedelta(seconds=2)
        reviewed_at = (asked_at + timedelta(days=1)).isoformat()
        records.append(
            {
                "format": "chatbot.transcript/1",
                "id": str(uuid.UUID(int=number + 1)),
                "status": "closed",
                "created_at": asked_at.isoformat(),
                "reviewed": True,
                "messages": [
                    {"role": "customer", "text": question, "created_at": asked_at.isoformat()},
                    {
                        "role": "bot",
                        "text": fact.wrong,
                        "created_at": answered_at.isoformat(),
                        "feedback": [
                            {
                                "source": "agent",
                                "positive": False,
                                "reason": "wrong",
                                "author": agent,
                                "created_at": reviewed_at,
                            }
                        ],
                        "correction": {"text": fact.correction, "author": agent, "created_at": reviewed_at},
                    },
                ],
            }
        )
    return records
