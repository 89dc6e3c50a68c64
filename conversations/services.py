"""Every write to conversations and messages. Keyword-only, typed, one obvious place for each."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import OuterRef, QuerySet, Subquery
from django.utils import timezone

from . import dispatch, events, roles, rules, selectors
from .models import Conversation, Correction, Customer, Feedback, Message


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
    handoff: bool = False  # True when the text asked for a person (settings.HANDOFF_PHRASES)
    stopped: Message | None = None  # the bot reply a handoff cancelled


def customer_of_session(session: Any) -> Customer | None:
    """The customer this browser session belongs to, if it has one that still exists."""
    customer_id = session.get("customer_id")
    return Customer.objects.filter(id=customer_id).first() if customer_id else None


def customer_create(*, session: Any, address: str | None) -> Customer:
    """A new customer for this browser session, recording the client address it came from."""
    customer = Customer.objects.create(address=address)
    session["customer_id"] = str(customer.id)
    session.save()
    return customer


def conversation_current(*, customer: Customer) -> Conversation:
    return selectors.conversation_latest_open(customer) or Conversation.objects.create(customer=customer)


@transaction.atomic
def conversation_start(*, customer: Customer) -> Conversation:
    """Close the customer's open conversations and start a fresh one (``CHAT_RATE_LIMIT_CONVERSATIONS``
    a window at most: each is a row, so a flood of "new conversation" frames is refused)."""
    _lock_customer(customer.id)  # two sockets of one customer count one after the other
    window = timedelta(seconds=settings.CHAT_RATE_LIMIT_WINDOW_S)
    started = customer.conversations.filter(created_at__gte=timezone.now() - window).count()
    if started >= settings.CHAT_RATE_LIMIT_CONVERSATIONS:
        raise ChatError(
            "rate_limited",
            f"Too many new conversations: at most {settings.CHAT_RATE_LIMIT_CONVERSATIONS} every "
            f"{settings.CHAT_RATE_LIMIT_WINDOW_S} seconds. Please wait a moment.",
        )
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


def _lock_customer(customer_id: Any) -> None:
    """Hold the customer's row until the transaction ends: a limit counted over all their
    conversations is checked and written by one socket at a time."""
    list(Customer.objects.select_for_update().filter(id=customer_id).values_list("id", flat=True))


def _check_rate_limit(customer_id: Any) -> None:
    """At most ``CHAT_RATE_LIMIT_MESSAGES`` a window of customer messages and retries together
    (a retry asks the model as much as a message does). Call with the customer's row locked."""
    since = timezone.now() - timedelta(seconds=settings.CHAT_RATE_LIMIT_WINDOW_S)
    recent = Message.objects.filter(conversation__customer_id=customer_id, created_at__gte=since)
    messages = recent.filter(role=Message.Role.CUSTOMER).count()
    if messages + _retries(recent) >= settings.CHAT_RATE_LIMIT_MESSAGES:
        raise ChatError(
            "rate_limited",
            f"Too many messages: at most {settings.CHAT_RATE_LIMIT_MESSAGES} every "
            f"{settings.CHAT_RATE_LIMIT_WINDOW_S} seconds. Please wait a moment.",
        )


def _retries(recent: QuerySet[Message]) -> int:
    """Bot replies among ``recent`` that follow a bot reply: a reply to a message follows that
    message (both made in one locked transaction), so only a retry follows a bot reply."""
    before = (
        Message.objects.filter(conversation=OuterRef("conversation"), id__lt=OuterRef("id"))
        .exclude(role=Message.Role.SYSTEM)
        .order_by("-id")
        .values("role")[:1]
    )
    bot_replies = recent.filter(role=Message.Role.BOT).annotate(before=Subquery(before))
    return bot_replies.filter(before=Message.Role.BOT).count()


def message_send(*, conversation: Conversation, text: Any, client_id: Any = None) -> SendResult:
    """Store what the customer typed and, when the bot holds the conversation, a pending reply.

    Both rows commit together before the worker hears of the reply, so nothing typed is lost
    whatever fails later. A resend with a known ``client_id`` returns the stored message. Text
    that asks for a person (``HANDOFF_PHRASES``) moves the conversation to waiting instead.
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
    bot_answers = rules.bot_may_write(conversation.status)
    handoff = bot_answers and wants_person(text)
    if bot_answers and not handoff and selectors.reply_in_flight(conversation):
        raise ChatError("reply_in_progress", "Please wait for the answer, or press Stop, before sending again.")
    try:
        with transaction.atomic():
            # The customer's row lock makes the rate limit's count and this write one step, over
            # all their sockets; the conversation's orders this against a takeover: the bot never
            # gets a reply queued after an agent has taken the conversation.
            _lock_customer(conversation.customer_id)
            _check_rate_limit(conversation.customer_id)
            locked = Conversation.objects.select_for_update().get(id=conversation.id)
            customer_message = Message.objects.create(
                conversation=conversation, role=Message.Role.CUSTOMER, text=text, client_id=client_id
            )
            bot_message = stopped = None
            if handoff:
                stopped = _stop_reply_in_flight(locked)
                locked.status = Conversation.Status.WAITING
            elif rules.bot_may_write(locked.status):
                bot_message = _reply_create(locked)
            locked.save(update_fields=["status", "updated_at"])
            conversation.status = locked.status
    except IntegrityError:  # the same client_id raced in from a second socket
        return SendResult(conversation.messages.get(client_id=client_id), None, created=False)
    return SendResult(customer_message, bot_message, created=True, handoff=handoff, stopped=stopped)


def wants_person(text: str) -> bool:
    """Whether the text contains one of ``HANDOFF_PHRASES`` as whole words, ignoring case."""
    said = f" {_words(text)} "
    return any(f" {phrase} " in said for phrase in map(_words, settings.HANDOFF_PHRASES) if phrase)


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def _reply_create(conversation: Conversation) -> Message:
    from finetuning.selectors import version_for_replies

    version = version_for_replies()
    reply = Message.objects.create(
        conversation=conversation,
        role=Message.Role.BOT,
        status=Message.Status.PENDING,
        model_version=version,
    )
    # robust: if Redis cannot take the request now, the reply stays pending in the database and a
    # worker's sweep queues it again (worker.InferenceWorker._requeue_lost); the customer's text
    # is committed either way.
    transaction.on_commit(lambda: dispatch.generation_request(message_id=reply.id), robust=True)
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
    """Ask again for the last bot reply, when it failed or was stopped; it counts as a message
    against ``CHAT_RATE_LIMIT_MESSAGES``. Locked as ``message_send`` is, so two sockets cannot
    both retry one reply or both pass the limit."""
    _lock_customer(conversation.customer_id)
    conversation = _locked(conversation)
    if not rules.bot_may_write(conversation.status):
        raise ChatError("not_with_bot", "The bot is not answering in this conversation.")
    last = conversation.messages.exclude(role=Message.Role.SYSTEM).order_by("-created_at", "-id").first()
    if (
        last is None
        or last.role != Message.Role.BOT
        or last.status
        not in (
            Message.Status.FAILED,
            Message.Status.CANCELLED,
        )
    ):
        raise ChatError("nothing_to_retry", "Only a failed or stopped last reply can be retried.")
    _check_rate_limit(conversation.customer_id)
    return _reply_create(conversation)


# Handoff between the bot and people. Each transition locks the conversation row, so a
# customer's message and a takeover never interleave (see message_send).


@dataclass(frozen=True)
class Transition:
    conversation: Conversation
    stopped: Message | None  # the bot reply this transition cancelled, if one was in flight
    changed: bool = True  # False when the conversation was already where it was asked to go


def _locked(conversation: Conversation) -> Conversation:
    return Conversation.objects.select_for_update(of=("self",)).select_related("agent").get(id=conversation.id)


def _stop_reply_in_flight(conversation: Conversation) -> Message | None:
    reply = selectors.reply_in_flight(conversation)
    return reply_stop(message=reply) if reply is not None else None


def _move(conversation: Conversation, status: str, agent: Any) -> Transition:
    stopped = _stop_reply_in_flight(conversation) if not rules.bot_may_write(status) else None
    conversation.status = status
    conversation.agent = agent
    conversation.save(update_fields=["status", "agent", "updated_at"])
    return Transition(conversation, stopped)


def _check_open(conversation: Conversation) -> None:
    if conversation.status == Conversation.Status.CLOSED:
        raise ChatError("conversation_closed", "This conversation is closed.")


@transaction.atomic
def handoff_request(*, conversation: Conversation) -> Transition:
    """The customer asks for a person: the bot stops and the conversation waits for an agent."""
    conversation = _locked(conversation)
    _check_open(conversation)
    if not rules.bot_may_write(conversation.status):
        return Transition(conversation, None, changed=False)  # already waiting, or with an agent
    return _move(conversation, Conversation.Status.WAITING, None)


@transaction.atomic
def conversation_takeover(*, conversation: Conversation, agent: Any) -> Transition:
    """An agent joins: the bot stops (a reply in flight is cancelled) and stays silent."""
    conversation = _locked(conversation)
    _check_open(conversation)
    if conversation.status == Conversation.Status.AGENT and conversation.agent_id not in (None, agent.id):
        raise ChatError("held_by_another_agent", f"{roles.display_name(conversation.agent)} holds this conversation.")
    return _move(conversation, Conversation.Status.AGENT, agent)


@transaction.atomic
def conversation_hand_back(*, conversation: Conversation, agent: Any) -> Transition:
    """The agent gives the conversation back to the bot, which answers the next message.

    A conversation still waiting for an agent can be handed back too (a request made by mistake).
    """
    conversation = _locked(conversation)
    if conversation.status != Conversation.Status.WAITING:
        _check_holder(conversation, agent)
    return _move(conversation, Conversation.Status.BOT, None)


@transaction.atomic
def conversation_close(*, conversation: Conversation, agent: Any) -> Transition:
    conversation = _locked(conversation)
    _check_open(conversation)
    if conversation.status == Conversation.Status.AGENT:
        _check_holder(conversation, agent)
    return _move(conversation, Conversation.Status.CLOSED, conversation.agent)


def _check_holder(conversation: Conversation, agent: Any) -> None:
    _check_open(conversation)
    if conversation.status != Conversation.Status.AGENT:
        raise ChatError("not_with_agent", "No agent holds this conversation; take it over first.")
    if conversation.agent_id != agent.id and not agent.is_staff:
        raise ChatError("held_by_another_agent", f"{roles.display_name(conversation.agent)} holds this conversation.")


def agent_message_send(*, conversation: Conversation, agent: Any, text: Any, client_id: Any = None) -> SendResult:
    """What the agent holding the conversation writes to the customer."""
    text = validate_text(text)
    client_id = validate_client_id(client_id)
    with transaction.atomic():
        locked = _locked(conversation)
        if client_id is not None:
            seen = locked.messages.filter(client_id=client_id).first()
            if seen is not None:
                return SendResult(seen, None, created=False)
        _check_holder(locked, agent)
        message = Message.objects.create(
            conversation=locked, role=Message.Role.AGENT, text=text, client_id=client_id, author=agent
        )
        locked.save(update_fields=["updated_at"])
    return SendResult(message, None, created=True)


# Feedback, corrections and review: what teaches the bot.

MAX_COMMENT_CHARS = 1000
MAX_TAGS = 20
MAX_TAG_CHARS = 40


def feedback_set(
    *, message: Message, source: str, positive: Any, reason: Any = "", comment: Any = "", author: Any = None
) -> Feedback | None:
    """Rate a bot reply, replacing the earlier rating from the same source; ``positive=None`` clears it."""
    if message.role != Message.Role.BOT or message.status in Message.ACTIVE_STATUSES:
        raise ChatError("not_rateable", "Only a finished bot reply can be rated.")
    if positive is None:
        Feedback.objects.filter(message=message, source=source).delete()
        return None
    if not isinstance(positive, bool):
        raise ChatError("invalid_feedback", '"positive" must be true, false or null.')
    reason = reason or ""
    if reason and reason not in Feedback.Reason.values:
        raise ChatError("invalid_reason", f"reason must be one of {', '.join(Feedback.Reason.values)}.")
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS:
        raise ChatError("invalid_comment", f"comment must be text of at most {MAX_COMMENT_CHARS} characters.")
    feedback, _ = Feedback.objects.update_or_create(
        message=message,
        source=source,
        defaults={
            "positive": positive,
            "reason": "" if positive else reason,
            "comment": comment.strip(),
            "author": author,
        },
    )
    return feedback


def correction_set(*, message: Message, text: Any, author: Any) -> Correction | None:
    """The reply the bot should have given; empty text removes the correction."""
    if message.role != Message.Role.BOT:
        raise ChatError("not_correctable", "Only a bot reply can be corrected.")
    if not isinstance(text, str):
        raise ChatError("empty_text", "A correction needs some text.")
    if not text.strip():
        Correction.objects.filter(message=message).delete()
        return None
    if len(text) > settings.CHAT_MAX_MESSAGE_CHARS * 4:
        raise ChatError("text_too_long", "This correction is too long.")
    correction, _ = Correction.objects.update_or_create(
        message=message, defaults={"text": text.strip(), "author": author}
    )
    return correction


def tags_parse(raw: Any) -> list[str]:
    """Tags from a list or a comma-separated string: trimmed, without duplicates, in order."""
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
        raise ChatError("invalid_tags", "tags must be a list of strings or a comma-separated string.")
    tags = list(dict.fromkeys(t.strip() for t in items if t.strip()))
    if len(tags) > MAX_TAGS or any(len(t) > MAX_TAG_CHARS for t in tags):
        raise ChatError("invalid_tags", f"At most {MAX_TAGS} tags of at most {MAX_TAG_CHARS} characters each.")
    return tags


def conversation_review(
    *,
    conversation: Conversation,
    tags: Any = None,
    note: Any = None,
    reviewed: bool | None = None,
    exclude_from_training: bool | None = None,
) -> Conversation:
    """Update the agent-only review fields given; the others keep their values."""
    fields = []
    if tags is not None:
        conversation.tags = tags_parse(tags)
        fields.append("tags")
    if note is not None:
        if not isinstance(note, str):
            raise ChatError("invalid_note", "note must be text.")
        conversation.note = note.strip()
        fields.append("note")
    if reviewed is not None:
        conversation.reviewed = bool(reviewed)
        fields.append("reviewed")
    if exclude_from_training is not None:
        conversation.exclude_from_training = bool(exclude_from_training)
        fields.append("exclude_from_training")
    if fields:
        conversation.save(update_fields=[*fields, "updated_at"])
    return conversation


def satisfaction_set(*, conversation: Conversation, score: Any) -> Conversation:
    """The customer's 1-5 rating of a closed conversation; a second click replaces the first."""
    conversation.refresh_from_db(fields=["status"])
    if conversation.status != Conversation.Status.CLOSED:
        raise ChatError("not_closed", "Satisfaction is asked once the conversation is closed.")
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise ChatError("invalid_score", "score must be a whole number from 1 to 5.")
    conversation.satisfaction = score
    conversation.save(update_fields=["satisfaction", "updated_at"])
    return conversation


# The inference worker's writes: claiming a reply, saving its progress, finishing it.


def reply_claim(*, message_id: int, consumer: str = "") -> Message | None:
    """Take a queued reply for generation; None when there is nothing (left) to generate.

    A reply found ``streaming`` was being written by a worker that died: it starts again from
    nothing, and the socket's next ``message`` frame tells browsers to drop the partial text.
    ``consumer`` (the worker's name) is recorded as the reply's owner.
    """
    with transaction.atomic():
        message = Message.objects.select_for_update().filter(id=message_id, role=Message.Role.BOT).first()
        if message is None or message.status not in Message.ACTIVE_STATUSES:
            return None
        if not rules.bot_may_write(message.conversation.status):  # a person holds it now
            message.status = Message.Status.CANCELLED
            message.finished_at = timezone.now()
            message.save(update_fields=["status", "finished_at"])
            done = events.done_event(message.id, message.text, message.status)
            transaction.on_commit(lambda: events.publish_sync(message.conversation_id, done))
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
