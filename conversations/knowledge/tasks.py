"""Celery entry points, queue ``finetuning``: thin. The message carries a message id; the rows say
what was taught. Embedding happens here, never in the web process that schedules the task."""

from __future__ import annotations

from celery import shared_task
from django.db import transaction

from ..models import Message
from . import services, vectors


@shared_task(queue="finetuning", acks_late=True)
def knowledge_suggest(message_id: int) -> int | None:
    """What the agent taught at ``message_id`` (a corrected bot reply, or an agent's answer in a
    takeover) becomes a suggestion or reinforces one; the entry's id, or None when nothing is left."""
    taught = taught_at(message_id)
    if taught is None:
        return None
    vector = vectors.embed([services.clean(taught.question, "question")])  # what is stored: no personal data
    return services.suggestion_record(taught=taught, vector=vector).id


def suggest_on_commit(message_id: int) -> None:
    """Schedule ``knowledge_suggest`` once the agent's write commits. Robust: a broker that refuses
    it never undoes the correction (the agent's write stands; the suggestion is what is lost)."""
    transaction.on_commit(lambda: knowledge_suggest.delay(message_id), robust=True)


def taught_at(message_id: int) -> services.Taught | None:
    """The question (the customer's message the reply answered) and the answer the agent gave;
    None when the correction was removed or no customer asked anything before it."""
    message = Message.objects.select_related("conversation", "author").filter(id=message_id).first()
    if message is None:
        return None
    correction = getattr(message, "correction", None) if message.role == Message.Role.BOT else None
    if message.role == Message.Role.BOT and correction is None:
        return None
    asked = question_before(message)
    if asked is None:
        return None
    answer = correction.text if correction is not None else message.text
    return services.Taught(
        question=asked.text,
        answer=answer,
        conversation=message.conversation,
        message=message,
        correction=correction,
        author=correction.author if correction is not None else message.author,
    )


def question_before(message: Message) -> Message | None:
    """The customer's message this reply answers: the latest one before it, when nothing but a bot
    reply the takeover cut short lies between (an agent's second message in a row answers nothing new)."""
    before = message.conversation.messages.filter(id__lt=message.id).exclude(role=Message.Role.SYSTEM)
    unfinished = before.filter(role=Message.Role.BOT).exclude(status=Message.Status.COMPLETE)
    last = before.exclude(id__in=unfinished.values("id")).order_by("-id").first()
    return last if last is not None and last.role == Message.Role.CUSTOMER and last.text.strip() else None
