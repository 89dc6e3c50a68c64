"""The inference worker's writes: claiming a reply, naming the model that writes it, saving its
progress, finishing it. Each asks ``rules`` whether the bot may still write there."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from .. import events, rules
from ..models import Message


def reply_claim(*, message_id: int, consumer: str = "") -> Message | None:
    """Take a queued reply for generation; None when there is nothing (left) to generate.

    A reply found ``streaming`` was being written by a worker that died: it starts again from
    nothing, and the socket's next ``message`` frame tells browsers to drop the partial text.
    ``consumer`` (the worker's name) is recorded as the reply's owner.
    """
    with transaction.atomic():
        message = (
            Message.objects.select_for_update(of=("self",))
            .select_related("conversation", "model_version")  # what ``rules`` and the prompt read next
            .filter(id=message_id, role=Message.Role.BOT)
            .first()
        )
        if message is None or message.status not in Message.ACTIVE_STATUSES:
            return None
        if not rules.bot_may_write(message.conversation.status):  # a person holds it now
            message.status = Message.Status.CANCELLED
            message.finished_at = timezone.now()
            message.save(update_fields=["status", "finished_at"])
            events.send_on_commit(events.reply_done(message))
            return None
        message.status = Message.Status.STREAMING
        message.text = ""
        message.token_count = 0
        message.first_token_at = None
        message.claimed_by = consumer[:200]
        message.save(update_fields=["status", "text", "token_count", "first_token_at", "claimed_by"])
    return message


def reply_progress(*, updates: dict[int, tuple[str, int, datetime]]) -> set[int]:
    """Save the text so far of streaming replies, so a reloading browser gets it from the database.

    ``updates`` maps a message id to (text so far, tokens so far, when its first token came).
    Returns the ids the bot may no longer write: the reply is not streaming any more (deleted), or
    its conversation left the bot (a handoff, a takeover, closed). The worker stops generating
    them and publishes nothing more, even if a cancel on pub/sub was lost.
    """
    gone = set()
    with transaction.atomic():
        for message_id, (text, token_count, first_token_at) in updates.items():
            saved = Message.objects.filter(
                id=message_id,
                status=Message.Status.STREAMING,
                conversation__status__in=rules.bot_writable_statuses(),
            ).update(text=text, token_count=token_count)
            if not saved:
                gone.add(message_id)
            Message.objects.filter(id=message_id, first_token_at__isnull=True).update(first_token_at=first_token_at)
    return gone


def reply_finish(
    *,
    message_id: int,
    text: str,
    finish_reason: str,
    token_count: int,
    first_token_at: datetime | None = None,
    error: str = "",
) -> Message | None:
    """Store a reply's end, with the status ``rules.reply_final_status`` gives ``finish_reason``
    (a key of ``rules.FINISH_STATUS``); None when there is nothing to finish (deleted, or already
    finished)."""
    with transaction.atomic():
        message = (
            Message.objects.select_for_update(of=("self",))
            .select_related("conversation")
            .filter(id=message_id, status__in=Message.ACTIVE_STATUSES)
            .first()
        )
        if message is None:
            return None
        status = rules.reply_final_status(finish_reason=finish_reason, conversation_status=message.conversation.status)
        message.text, message.status, message.token_count = text, status, token_count
        message.error, message.finished_at = error[:200], timezone.now()
        message.first_token_at = message.first_token_at or first_token_at
        message.save(update_fields=["text", "status", "token_count", "error", "finished_at", "first_token_at"])
    return message


def reply_model_set(*, message_id: int, model_name: str, grounding: list[dict[str, Any]] | None = None) -> None:
    """Which model (and adapter) writes the reply, and the knowledge entries it is grounded on
    (ids and scores), for the agents' transcript."""
    Message.objects.filter(id=message_id).update(model_name=model_name, grounding=grounding or [])
