"""The bot's place in a conversation, decided in one place.

The invariant the whole project rests on: the bot never has the last word in a conversation a
person holds (or that is closed). Every write of a bot reply, from queueing it to its final save,
asks ``bot_may_write``; a reply's final status is decided by ``reply_final_status`` alone.
"""

from __future__ import annotations

from .models import Conversation, Message

# What the engine said about how a reply ended, as the status the reply is stored with.
FINISH_STATUS = {
    "stop": Message.Status.COMPLETE,
    "length": Message.Status.COMPLETE,
    "cancelled": Message.Status.CANCELLED,
    "timeout": Message.Status.FAILED,
    "error": Message.Status.FAILED,
}


def bot_may_write(status: str) -> bool:
    """Whether the bot may still write a reply in a conversation of this status."""
    return status == Conversation.Status.BOT


def bot_writable_statuses() -> list[str]:
    """``bot_may_write`` as a set of statuses, for a query that checks it in the database."""
    return [status for status in Conversation.Status.values if bot_may_write(status)]


def reply_final_status(*, finish_reason: str, conversation_status: str) -> str:
    """The status a reply ends with: a reply that completes after its conversation left the bot is
    cancelled, so the bot does not have the last word there."""
    status = FINISH_STATUS[finish_reason]
    if status == Message.Status.COMPLETE and not bot_may_write(conversation_status):
        return Message.Status.CANCELLED
    return status
