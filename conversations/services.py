"""Every write to conversations and messages. Keyword-only, typed, one obvious place for each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import dispatch, selectors
from .models import Conversation, Customer, Message


class ChatError(Exception):
    """A request the chat refuses, with a stable code for clients (docs/protocol.md)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class SendResult:
    customer_message: Message
    bot_message: Message | None
    created: bool  # False when the client_id had been seen before


def customer_from_session(session: Any) -> Customer:
    """The customer this browser session belongs to, created on the first visit."""
    customer_id = session.get("customer_id")
    customer = Customer.objects.filter(id=customer_id).first() if customer_id else None
    if customer is None:
        customer = Customer.objects.create()
        session["customer_id"] = str(customer.id)
        session.save()
    return customer


def conversation_current(*, customer: Customer) -> Conversation:
    return selectors.conversation_latest_open(customer) or Conversation.objects.create(customer=customer)


@transaction.atomic
def conversation_start(*, customer: Customer) -> Conversation:
    """Close the customer's open conversations and start a fresh one."""
    for conversation in customer.conversations.exclude(status=Conversation.Status.CLOSED):
        reply = selectors.reply_in_flight(conversation)
        if reply is not None:
            reply_stop(message=reply)
        conversation.status = Conversation.Status.CLOSED
        conversation.save(update_fields=["status", "updated_at"])
    return Conversation.objects.create(customer=customer)


def validate_text(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ChatError("empty_text", "A message needs some text.")
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(text) > limit:
        raise ChatError("text_too_long", f"A message can be at most {limit} characters; this one has {len(text)}.")
    return text.strip()


def validate_client_id(client_id: Any) -> str | None:
    if client_id is None:
        return None
    if not isinstance(client_id, str) or not 1 <= len(client_id) <= 64:
        raise ChatError("invalid_client_id", "client_id must be a string of 1 to 64 characters.")
    return client_id


def _check_rate_limit(customer: Customer) -> None:
    window = timedelta(seconds=settings.CHAT_RATE_LIMIT_WINDOW_S)
    recent = Message.objects.filter(
        conversation__customer=customer, role=Message.Role.CUSTOMER, created_at__gte=timezone.now() - window
    ).count()
    if recent >= settings.CHAT_RATE_LIMIT_MESSAGES:
        raise ChatError(
            "rate_limited",
            f"Too many messages: at most {settings.CHAT_RATE_LIMIT_MESSAGES} every "
            f"{settings.CHAT_RATE_LIMIT_WINDOW_S} seconds. Please wait a moment.",
        )


def message_send(*, conversation: Conversation, text: Any, client_id: Any = None) -> SendResult:
    """Store what the customer typed and, when the bot holds the conversation, a pending reply.

    Both rows commit together before the worker hears of the reply, so nothing typed is lost
    whatever fails later. A resend with a known ``client_id`` returns the stored message.
    """
    text = validate_text(text)
    client_id = validate_client_id(client_id)
    conversation.refresh_from_db(fields=["status"])
    if client_id is not None:
        seen = conversation.messages.filter(client_id=client_id).first()
        if seen is not None:
            return SendResult(seen, None, created=False)
    if conversation.status == Conversation.Status.CLOSED:
        raise ChatError("conversation_closed", "This conversation is closed; start a new one.")
    _check_rate_limit(conversation.customer)
    if conversation.status == Conversation.Status.BOT and selectors.reply_in_flight(conversation):
        raise ChatError("reply_in_progress", "Please wait for the answer, or press Stop, before sending again.")
    try:
        with transaction.atomic():
            customer_message = Message.objects.create(
                conversation=conversation, role=Message.Role.CUSTOMER, text=text, client_id=client_id
            )
            bot_message = None
            if conversation.status == Conversation.Status.BOT:
                bot_message = _reply_create(conversation)
            conversation.save(update_fields=["updated_at"])
    except IntegrityError:  # the same client_id raced in from a second socket
        return SendResult(conversation.messages.get(client_id=client_id), None, created=False)
    return SendResult(customer_message, bot_message, created=True)


def _reply_create(conversation: Conversation) -> Message:
    from finetuning.selectors import version_active

    version = version_active()
    reply = Message.objects.create(
        conversation=conversation,
        role=Message.Role.BOT,
        status=Message.Status.PENDING,
        model_version=version,
    )
    transaction.on_commit(lambda: dispatch.generation_request(message_id=reply.id))
    return reply


def reply_stop(*, message: Message) -> Message:
    """Stop a bot reply: a pending one is cancelled here, a streaming one by the worker."""
    cancelled = Message.objects.filter(id=message.id, status=Message.Status.PENDING).update(
        status=Message.Status.CANCELLED, finished_at=timezone.now()
    )
    if not cancelled:
        transaction.on_commit(lambda: dispatch.generation_cancel(message_id=message.id))
    message.refresh_from_db()
    return message


@transaction.atomic
def reply_retry(*, conversation: Conversation) -> Message:
    """Ask again for the last bot reply, when it failed or was stopped."""
    if conversation.status != Conversation.Status.BOT:
        raise ChatError("not_with_bot", "The bot is not answering in this conversation.")
    last = conversation.messages.exclude(role=Message.Role.SYSTEM).order_by("-created_at", "-id").first()
    if last is None or last.role != Message.Role.BOT or last.status not in (
        Message.Status.FAILED,
        Message.Status.CANCELLED,
    ):
        raise ChatError("nothing_to_retry", "Only a failed or stopped last reply can be retried.")
    return _reply_create(conversation)


# The inference worker's writes: claiming a reply, saving its progress, finishing it.


def reply_claim(*, message_id: int) -> Message | None:
    """Take a queued reply for generation; None when there is nothing (left) to generate.

    A reply found ``streaming`` was being written by a worker that died: it starts again from
    nothing, and the socket's next ``message`` frame tells browsers to drop the partial text.
    """
    with transaction.atomic():
        message = Message.objects.select_for_update().filter(id=message_id, role=Message.Role.BOT).first()
        if message is None or message.status not in Message.ACTIVE_STATUSES:
            return None
        message.status = Message.Status.STREAMING
        message.text = ""
        message.token_count = 0
        message.first_token_at = None
        message.save(update_fields=["status", "text", "token_count", "first_token_at"])
    return message


def reply_progress(*, updates: dict[int, tuple[str, int, datetime]]) -> None:
    """Save the text so far of streaming replies, so a reloading browser gets it from the database.

    ``updates`` maps a message id to (text so far, tokens so far, when its first token came).
    """
    with transaction.atomic():
        for message_id, (text, token_count, first_token_at) in updates.items():
            Message.objects.filter(id=message_id, status=Message.Status.STREAMING).update(
                text=text, token_count=token_count
            )
            Message.objects.filter(id=message_id, first_token_at__isnull=True).update(first_token_at=first_token_at)


def reply_finish(
    *,
    message_id: int,
    text: str,
    status: str,
    token_count: int,
    first_token_at: datetime | None = None,
    error: str = "",
) -> Message:
    Message.objects.filter(id=message_id).update(
        text=text, status=status, token_count=token_count, error=error[:200], finished_at=timezone.now()
    )
    if first_token_at is not None:
        Message.objects.filter(id=message_id, first_token_at__isnull=True).update(first_token_at=first_token_at)
    return Message.objects.get(id=message_id)
