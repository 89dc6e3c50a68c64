"""The one rule for whether the bot may write, and the one decision of a reply's final status."""

from __future__ import annotations

import pytest

from conversations import rules
from conversations.models import Conversation, Message


def test_it_lets_the_bot_write_only_while_it_holds_the_conversation() -> None:
    allowed = {status for status in Conversation.Status.values if rules.bot_may_write(status)}
    assert allowed == {Conversation.Status.BOT}


def test_its_query_form_names_the_same_statuses() -> None:
    assert rules.bot_writable_statuses() == [Conversation.Status.BOT]


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        ("stop", Message.Status.COMPLETE),
        ("length", Message.Status.COMPLETE),
        ("cancelled", Message.Status.CANCELLED),
        ("timeout", Message.Status.FAILED),
        ("error", Message.Status.FAILED),
    ],
)
def test_it_stores_each_finish_reason_with_its_status_while_the_bot_holds_it(reason: str, status: str) -> None:
    assert rules.reply_final_status(finish_reason=reason, conversation_status=Conversation.Status.BOT) == status


@pytest.mark.parametrize("held", [Conversation.Status.WAITING, Conversation.Status.AGENT, Conversation.Status.CLOSED])
def test_it_cancels_a_reply_that_completes_after_the_conversation_left_the_bot(held: str) -> None:
    assert rules.reply_final_status(finish_reason="stop", conversation_status=held) == Message.Status.CANCELLED


@pytest.mark.parametrize("reason", ["timeout", "error"])
def test_it_keeps_a_failure_failed_whoever_holds_the_conversation(reason: str) -> None:
    status = rules.reply_final_status(finish_reason=reason, conversation_status=Conversation.Status.AGENT)
    assert status == Message.Status.FAILED
