"""A week of service with KNOWN figures: six conversations over three days (Friday 6, Saturday 7
and Monday 9 March 2026, UTC: two ISO weeks), two model versions and the base model, two agents.

c1 Fri: first reply v1 (queued +1 s, first token +3 s), grounded, customer 👍; CSAT 5; closed +600 s.
c2 Fri: v1 (+5 s), not grounded, customer 👎 and agent 👎; handoff +60 s, takeover by dana +90 s,
        dana writes +150 s; CSAT 4; closed +1200 s.
c3 Fri: v2 (+2 s) grounded, the customer again +30 s, v2 again (+34 s) not grounded, customer 👍
        on the second; open.
c4 Sat: v2 (+7 s); takeover by eli +20 s, eli writes +50, +80, +90 s; CSAT 2; closed +300 s.
c5 Mon: v2 (+4 s) grounded, agent 👍; handoff +10 s, dana writes +130 s; open.
c6 Mon: the base model (+11 s), customer 👎; closed +100 s.

Not counted: a conversation without a customer message (Monday), one a month before the range.
The hand-computed figures are in tests/reports/test_selectors.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conversations.models import Conversation, ConversationEvent, Customer, Feedback, Message
from finetuning.models import ModelVersion

FRIDAY = datetime(2026, 3, 6, tzinfo=UTC)
SATURDAY = FRIDAY + timedelta(days=1)
MONDAY = FRIDAY + timedelta(days=3)
RANGE = {"since": "2026-03-06", "until": "2026-03-09"}


def _at(model: Any, row: Any, **times: datetime) -> Any:
    """Set auto_now_add times (created_at) after the fact: the fixture's clock, not the test's."""
    model.objects.filter(pk=row.pk).update(**times)
    for name, value in times.items():
        setattr(row, name, value)
    return row


class Builder:
    def __init__(self, customer: Customer) -> None:
        self.customer = customer

    def conversation(self, start: datetime, *, satisfaction: int | None = None, closed_after: int | None = None) -> Any:
        closed = start + timedelta(seconds=closed_after) if closed_after is not None else None
        row = Conversation.objects.create(
            customer=self.customer,
            satisfaction=satisfaction,
            status=Conversation.Status.CLOSED if closed else Conversation.Status.BOT,
            closed_at=closed,
        )
        return _at(Conversation, row, created_at=start)

    def customer_says(self, conversation: Any, after: int) -> Message:
        row = Message.objects.create(conversation=conversation, role=Message.Role.CUSTOMER, text="help")
        return _at(Message, row, created_at=conversation.created_at + timedelta(seconds=after))

    def bot_replies(
        self, conversation: Any, after: int, first_token: int, version: Any, *, grounded: bool = False
    ) -> Message:
        start = conversation.created_at
        row = Message.objects.create(
            conversation=conversation,
            role=Message.Role.BOT,
            text="answer",
            model_version=version,
            first_token_at=start + timedelta(seconds=first_token),
            finished_at=start + timedelta(seconds=first_token + 1),
            grounding=[{"entry": 1, "score": 0.9}] if grounded else [],
        )
        return _at(Message, row, created_at=start + timedelta(seconds=after))

    def agent_says(self, conversation: Any, after: int, author: Any) -> Message:
        row = Message.objects.create(conversation=conversation, role=Message.Role.AGENT, text="hi", author=author)
        return _at(Message, row, created_at=conversation.created_at + timedelta(seconds=after))

    def event(self, conversation: Any, after: int, kind: str, actor: Any = None) -> None:
        row = ConversationEvent.objects.create(conversation=conversation, kind=kind, actor=actor)
        _at(ConversationEvent, row, created_at=conversation.created_at + timedelta(seconds=after))


def rate(message: Message, source: str, positive: bool, author: Any = None) -> None:
    Feedback.objects.create(message=message, source=source, positive=positive, author=author)


@pytest.fixture
def known_week(customer: Customer, agent_user: Any, second_agent: Any) -> dict[str, Any]:
    dana, eli = agent_user, second_agent
    v1 = _at(ModelVersion, ModelVersion.objects.create(name="v1", base_model="base", status="retired"),
             created_at=FRIDAY - timedelta(days=20))  # fmt: skip
    v2 = _at(ModelVersion, ModelVersion.objects.create(name="v2", base_model="base", status="active"),
             created_at=FRIDAY - timedelta(days=10))  # fmt: skip
    build = Builder(customer)
    handoff, takeover = ConversationEvent.Kind.HANDOFF_REQUESTED, ConversationEvent.Kind.TAKEN_OVER

    c1 = build.conversation(FRIDAY + timedelta(hours=10), satisfaction=5, closed_after=600)
    build.customer_says(c1, 0)
    rate(build.bot_replies(c1, 1, 3, v1, grounded=True), "customer", True)

    c2 = build.conversation(FRIDAY + timedelta(hours=11), satisfaction=4, closed_after=1200)
    build.customer_says(c2, 0)
    reply = build.bot_replies(c2, 1, 5, v1)
    rate(reply, "customer", False)
    rate(reply, "agent", False, dana)
    build.event(c2, 60, handoff)
    build.event(c2, 90, takeover, dana)
    build.agent_says(c2, 150, dana)

    c3 = build.conversation(FRIDAY + timedelta(hours=12))
    build.customer_says(c3, 0)
    build.bot_replies(c3, 1, 2, v2, grounded=True)
    build.customer_says(c3, 30)
    rate(build.bot_replies(c3, 31, 34, v2), "customer", True)

    c4 = build.conversation(SATURDAY + timedelta(hours=9), satisfaction=2, closed_after=300)
    build.customer_says(c4, 0)
    build.bot_replies(c4, 1, 7, v2)
    build.event(c4, 20, takeover, eli)
    for after in (50, 80, 90):
        build.agent_says(c4, after, eli)

    c5 = build.conversation(MONDAY + timedelta(hours=8))
    build.customer_says(c5, 0)
    rate(build.bot_replies(c5, 1, 4, v2, grounded=True), "agent", True, dana)
    build.event(c5, 10, handoff)
    build.agent_says(c5, 130, dana)

    c6 = build.conversation(MONDAY + timedelta(hours=9), closed_after=100)
    build.customer_says(c6, 0)
    rate(build.bot_replies(c6, 1, 11, None), "customer", False)

    build.conversation(MONDAY + timedelta(hours=10))  # opened, never written in: not counted
    outside = build.conversation(FRIDAY - timedelta(days=30), satisfaction=1)
    build.customer_says(outside, 0)
    build.bot_replies(outside, 1, 2, v1)
    return {"v1": v1, "v2": v2, "dana": dana, "eli": eli}
