"""The customer's writes: their identity, their conversations and messages, stopping and retrying
a reply, asking for a person, rating. Each sends its frames after its commit (``events``); the
agents' writes (``workspace.services``) build on the locks and the hand-over here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.sessions.backends.base import SessionBase
from django.db import IntegrityError, connection, transaction
from django.db.models import OuterRef, QuerySet, Subquery
from django.utils import timezone

from .. import dispatch, events, health, rules, selectors
from ..errors import ChatError
from ..models import Conversation, ConversationEvent, Customer, Feedback, Message


@dataclass(frozen=True)
class SendResult:
    customer_message: Message
    bot_message: Message | None
    created: bool  # False when the client_id had been seen before
    handoff: bool = False  # True when the text asked for a person (settings.HANDOFF_PHRASES)


def customer_of_session(session: SessionBase) -> Customer | None:
    """The customer this browser session belongs to, if it has one that still exists."""
    customer_id = session.get("customer_id")
    return Customer.objects.filter(id=customer_id).first() if customer_id else None


def customer_create(*, session: SessionBase, address: str | None) -> Customer:
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
        stop_reply_in_flight(conversation)
        before, conversation.status = conversation.status, Conversation.Status.CLOSED
        fields, recorded = status_stamp(conversation, before, actor=None)
        conversation.save(update_fields=["status", "updated_at", *fields])
        events.send_on_commit(
            *events.status_changed(conversation), *events.activity_of(recorded)
        )  # agents see it closed
    return Conversation.objects.create(customer=customer)


def validate_text(text: object) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ChatError("empty_text", "A message needs some text.")
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(text) > limit:
        raise ChatError("text_too_long", f"A message can be at most {limit} characters; this one has {len(text)}.")
    return text.strip()


def validate_client_id(client_id: object) -> str | None:
    if client_id is None:
        return None
    if not isinstance(client_id, str) or not 1 <= len(client_id) <= 64:
        raise ChatError("invalid_client_id", "client_id must be a string of 1 to 64 characters.")
    return client_id


def _lock_customer(customer_id: UUID) -> None:
    """Hold the customer's row until the transaction ends: a limit counted over all their
    conversations is checked and written by one socket at a time. SQLite needs no row lock: its
    write transactions begin IMMEDIATE (settings.DATABASES), one at a time for the whole file."""
    if connection.features.has_select_for_update:
        list(Customer.objects.select_for_update().filter(id=customer_id).values_list("id", flat=True))


def _rate_limited() -> ChatError:
    return ChatError(
        "rate_limited",
        f"Too many messages: at most {settings.CHAT_RATE_LIMIT_MESSAGES} every "
        f"{settings.CHAT_RATE_LIMIT_WINDOW_S} seconds. Please wait a moment.",
    )


def _check_rate_limit(customer_id: UUID) -> None:
    """At most ``CHAT_RATE_LIMIT_MESSAGES`` a window of customer messages and retries together
    (a retry asks the model as much as a message does). Call with the customer's row locked."""
    recent = Message.objects.filter(conversation__customer_id=customer_id, created_at__gte=_window_start())
    messages = recent.filter(role=Message.Role.CUSTOMER).count()
    if messages + _retries(recent) >= settings.CHAT_RATE_LIMIT_MESSAGES:
        raise _rate_limited()


def _window_start() -> datetime:
    return timezone.now() - timedelta(seconds=settings.CHAT_RATE_LIMIT_WINDOW_S)


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


@dataclass(frozen=True)
class _SendState:
    """What ``message_send`` decides on, read in one query under the locks."""

    customer_messages: int  # the customer's messages in the rate limit's window, all conversations
    bot_replies: int  # their bot replies in the window: the retries are among them
    in_flight: bool  # a bot reply of this conversation still pending or streaming
    seen: bool  # a message of this conversation already has this client_id (a resend)


def _send_state(conversation: Conversation, client_id: str | None) -> _SendState:
    """One statement, written out: compiling it through the ORM's conditional aggregates cost a
    tenth of the web process's time under load (docs/web-tier.md)."""
    message, chat = Message._meta, Conversation._meta
    uuid = chat.pk.get_db_prep_value
    since = connection.ops.adapt_datetimefield_value(_window_start())
    this = uuid(conversation.id, connection)
    active = list(Message.ACTIVE_STATUSES)
    marks = ", ".join(["%s"] * len(active))
    sql = f"""
        SELECT
            COUNT(CASE WHEN m.created_at >= %s AND m.role = %s THEN 1 END),
            COUNT(CASE WHEN m.created_at >= %s AND m.role = %s THEN 1 END),
            COUNT(CASE WHEN m.conversation_id = %s AND m.role = %s AND m.status IN ({marks}) THEN 1 END),
            COUNT(CASE WHEN m.conversation_id = %s AND m.client_id = %s THEN 1 END)
        FROM {message.db_table} m JOIN {chat.db_table} c ON c.id = m.conversation_id
        WHERE c.customer_id = %s AND (
            m.created_at >= %s
            OR (m.conversation_id = %s AND (m.status IN ({marks}) OR m.client_id = %s))
        )
    """  # noqa: S608 - table names from the models, every value a parameter
    params = [since, Message.Role.CUSTOMER, since, Message.Role.BOT, this, Message.Role.BOT, *active]
    params += [this, client_id, Customer._meta.pk.get_db_prep_value(conversation.customer_id, connection)]
    params += [since, this, *active, client_id]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        customer, bot, in_flight, seen = cursor.fetchone()
    return _SendState(customer, bot, in_flight > 0, client_id is not None and seen > 0)


def message_send(*, conversation: Conversation, text: object, client_id: object = None) -> SendResult:
    """Store what the customer typed and, when the bot holds the conversation, a pending reply.

    Both rows commit together before the worker hears of the reply, so nothing typed is lost
    whatever fails later. A resend with a known ``client_id`` returns the stored message. Text
    that asks for a person (``HANDOFF_PHRASES``) moves the conversation to waiting instead.

    Every customer message of every chat comes through here, so it reads what it decides on in one
    query under its locks (``_SendState``) and leaves the inbox row to ``events.inbox_touched``
    (docs/web-tier.md): seven statements for a message the bot answers.
    """
    text = validate_text(text)
    client_id = validate_client_id(client_id)
    try:
        with transaction.atomic():
            # The customer's row lock makes the rate limit's count and this write one step, over
            # all their sockets; the conversation's orders this against a takeover: the bot never
            # gets a reply queued after an agent has taken the conversation.
            _lock_customer(conversation.customer_id)
            locked = Conversation.objects.select_for_update().get(id=conversation.id)
            conversation.status = locked.status
            state = _send_state(locked, client_id)
            if state.seen:
                return SendResult(conversation.messages.get(client_id=client_id), None, created=False)
            if locked.status == Conversation.Status.CLOSED:
                raise ChatError("conversation_closed", "This conversation is closed; start a new one.")
            bot_answers = rules.bot_may_write(locked.status)
            handoff = bot_answers and wants_person(text)
            if bot_answers and not handoff and state.in_flight:
                raise ChatError("reply_in_progress", "Please wait for the answer, or press Stop, before sending again.")
            limit = settings.CHAT_RATE_LIMIT_MESSAGES
            if state.customer_messages + state.bot_replies >= limit:  # else the retries cannot reach it
                recent = Message.objects.filter(
                    conversation__customer_id=conversation.customer_id, created_at__gte=_window_start()
                )
                if state.customer_messages + _retries(recent) >= limit:
                    raise _rate_limited()
            customer_message = Message.objects.create(
                conversation=conversation, role=Message.Role.CUSTOMER, text=text, client_id=client_id
            )
            bot_message = None
            before = locked.status
            if handoff:
                stop_reply_in_flight(locked)
                locked.status = Conversation.Status.WAITING
            elif bot_answers:
                bot_message = _reply_create(locked)
            stamped, recorded = status_stamp(locked, before, actor=None)
            locked.last_activity_at = customer_message.created_at
            locked.save(update_fields=["status", "updated_at", "last_activity_at", *stamped])
            conversation.status = locked.status
    except IntegrityError:  # the same client_id raced in from a second socket
        return SendResult(conversation.messages.get(client_id=client_id), None, created=False)
    result = SendResult(customer_message, bot_message, created=True, handoff=handoff)
    events.send_on_commit(
        *_sent_events(result), *events.activity_of(recorded)
    )  # after the block: no Redis read under its locks
    return result


def _sent_events(result: SendResult) -> list[events.Event]:
    """The message for the conversation's group; the inbox row (an alert when it asks for a
    person); the pending reply and, when no worker is up, a notice that says so."""
    conversation = result.customer_message.conversation
    sent = [events.message_sent(result.customer_message)]
    sent += events.status_changed(conversation, alert=True) if result.handoff else [events.inbox_touched(conversation)]
    if result.bot_message is not None:
        sent.append(events.message_sent(result.bot_message))
        notice = health.worker_notice(health.worker_state())
        if notice is not None:
            sent.append(events.to_conversation(conversation.id, notice))
    return sent


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
    """Stop a bot reply: a pending one is cancelled here (its ``done`` sent from here), a streaming
    one by the worker (which sends its ``done``)."""
    cancelled = Message.objects.filter(id=message.id, status=Message.Status.PENDING).update(
        status=Message.Status.CANCELLED, finished_at=timezone.now()
    )
    if not cancelled:
        transaction.on_commit(lambda: dispatch.generation_cancel(message_id=message.id))
    message.refresh_from_db()
    if cancelled:
        events.send_on_commit(events.reply_done(message))
    return message


@transaction.atomic
def reply_retry(*, conversation: Conversation) -> Message:
    """Ask again for the last bot reply, when it failed or was stopped; it counts as a message
    against ``CHAT_RATE_LIMIT_MESSAGES``. Locked as ``message_send`` is, so two sockets cannot
    both retry one reply or both pass the limit."""
    _lock_customer(conversation.customer_id)
    conversation = conversation_locked(conversation)
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
    reply = _reply_create(conversation)
    events.send_on_commit(events.message_sent(reply))
    return reply


# Handoff between the bot and people. Each transition locks the conversation row, so a
# customer's message and a takeover never interleave (see message_send).


@dataclass(frozen=True)
class Transition:
    conversation: Conversation
    stopped: Message | None  # the bot reply this transition cancelled, if one was in flight
    changed: bool = True  # False when the conversation was already where it was asked to go


def conversation_locked(conversation: Conversation) -> Conversation:
    return Conversation.objects.select_for_update(of=("self",)).select_related("agent").get(id=conversation.id)


def stop_reply_in_flight(conversation: Conversation) -> Message | None:
    reply = selectors.reply_in_flight(conversation)
    return reply_stop(message=reply) if reply is not None else None


def conversation_move(
    conversation: Conversation,
    status: str,
    agent: User | None,
    *,
    alert: bool = False,
    actor: User | None = None,
) -> Transition:
    """Move the locked conversation to ``status`` (stopping the bot's reply when it may no longer
    write) and tell its group and the inbox; ``alert`` when it now waits for an agent. ``actor``:
    who moved it (None: the customer or the system), for the event it records (``status_stamp``)."""
    stopped = stop_reply_in_flight(conversation) if not rules.bot_may_write(status) else None
    before = conversation.status
    conversation.status = status
    conversation.agent = agent
    fields, recorded = status_stamp(conversation, before, actor=actor)
    conversation.save(update_fields=["status", "agent", "updated_at", *fields])
    events.send_on_commit(*events.status_changed(conversation, alert=alert), *events.activity_of(recorded))
    return Transition(conversation, stopped)


STATUS_EVENTS: dict[str, str] = {
    Conversation.Status.WAITING: ConversationEvent.Kind.HANDOFF_REQUESTED,
    Conversation.Status.AGENT: ConversationEvent.Kind.TAKEN_OVER,
    Conversation.Status.BOT: ConversationEvent.Kind.HANDED_BACK,
    Conversation.Status.CLOSED: ConversationEvent.Kind.CLOSED,
}


def status_stamp(
    conversation: Conversation, before: str, *, actor: User | None
) -> tuple[list[str], ConversationEvent | None]:
    """After ``conversation.status`` changed from ``before`` (not saved yet): record the event
    (asked for a person, taken over, handed back, closed) and set the times that go with the new
    status (waiting since, closed at, last activity). The fields to save and the event, for the
    caller to send after the status (``events.activity_of``); nothing when nothing moved."""
    status = conversation.status
    if status == before:
        return [], None
    now = timezone.now()
    event = ConversationEvent.objects.create(conversation=conversation, kind=STATUS_EVENTS[status], actor=actor)
    conversation.waiting_since = now if status == Conversation.Status.WAITING else None
    conversation.closed_at = now if status == Conversation.Status.CLOSED else None
    conversation.last_activity_at = now
    return ["waiting_since", "closed_at", "last_activity_at"], event


def system_line_write(*, conversation: Conversation, text: str, author: User | None = None) -> Message:
    """A line in the thread that says who holds the conversation now ("Dana joined the
    conversation."): role SYSTEM, shown to the customer and the agents, and kept out of prompts,
    datasets, inbox counts and the rate limit (each of those skips ``Message.Role.SYSTEM``)."""
    line = Message.objects.create(
        conversation=conversation, role=Message.Role.SYSTEM, text=text, status=Message.Status.COMPLETE, author=author
    )
    events.send_on_commit(events.message_sent(line))
    return line


def check_open(conversation: Conversation) -> None:
    if conversation.status == Conversation.Status.CLOSED:
        raise ChatError("conversation_closed", "This conversation is closed.")


@transaction.atomic
def handoff_request(*, conversation: Conversation) -> Transition:
    """The customer asks for a person: the bot stops and the conversation waits for an agent."""
    conversation = conversation_locked(conversation)
    check_open(conversation)
    if not rules.bot_may_write(conversation.status):
        return Transition(conversation, None, changed=False)  # already waiting, or with an agent
    return conversation_move(conversation, Conversation.Status.WAITING, None, alert=True)


# Typing: who is writing now, shown to the other side. Nothing is stored.

TYPING_MIN_INTERVAL_S = 1.0  # a socket's typing frames closer together than this are ignored


@dataclass
class TypingThrottle:
    """One socket's typing frames: at most one a ``interval_s``; the page sends one every 2 s while
    the person types, so a flood costs a comparison each and reaches nobody."""

    interval_s: float = TYPING_MIN_INTERVAL_S
    last: float = float("-inf")

    def allow(self, now: float) -> bool:
        if now - self.last < self.interval_s:
            return False
        self.last = now
        return True


def customer_typing_send(*, conversation: Conversation) -> bool:
    """Tell the agents watching that the customer types, with the name they gave (read fresh: the
    pre-chat form may have set it since the socket opened); only while a person holds or is asked
    for the conversation (the bot does not wait for anyone). False when nothing was sent."""
    row = Conversation.objects.filter(id=conversation.id).values_list("status", "customer__display_name").first()
    if row is None or row[0] not in (Conversation.Status.WAITING, Conversation.Status.AGENT):
        return False
    events.send_on_commit(events.typing_sent(conversation.id, who="customer", name=row[1] or ""))
    return True


# Ratings: what teaches the bot.

MAX_COMMENT_CHARS = 1000


def feedback_set(
    *,
    message: Message,
    source: str,
    positive: object,
    reason: object = "",
    comment: object = "",
    author: User | None = None,
) -> Feedback | None:
    """Rate a bot reply, replacing the earlier rating from the same source; ``positive=None`` clears it."""
    if message.role != Message.Role.BOT or message.status in Message.ACTIVE_STATUSES:
        raise ChatError("not_rateable", "Only a finished bot reply can be rated.")
    if positive is None:
        Feedback.objects.filter(message=message, source=source).delete()
        _feedback_sent(message, source, None)
        return None
    if not isinstance(positive, bool):
        raise ChatError("invalid_feedback", '"positive" must be true, false or null.')
    reason = reason or ""
    if not isinstance(reason, str) or (reason and reason not in Feedback.Reason.values):
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
    _feedback_sent(message, source, feedback)
    return feedback


def _feedback_sent(message: Message, source: str, feedback: Feedback | None) -> None:
    """The agents see the rating (``customer_feedback`` or ``agent_feedback``) and the inbox row,
    whose negative flag may have changed."""
    payload = selectors.feedback_payload(feedback) if feedback else None
    rating = {"message_id": message.id, f"{source}_feedback": payload}
    review = events.to_agents(events.review_event(str(message.conversation_id), rating))
    events.send_on_commit(review, events.inbox_changed(message.conversation))


def satisfaction_set(*, conversation: Conversation, score: object) -> Conversation:
    """The customer's 1-5 rating of a closed conversation; a second click replaces the first."""
    conversation.refresh_from_db(fields=["status"])
    if conversation.status != Conversation.Status.CLOSED:
        raise ChatError("not_closed", "Satisfaction is asked once the conversation is closed.")
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise ChatError("invalid_score", "score must be a whole number from 1 to 5.")
    conversation.satisfaction = score
    conversation.save(update_fields=["satisfaction", "updated_at"])
    review = events.review_event(str(conversation.id), {"satisfaction": conversation.satisfaction})
    events.send_on_commit(events.to_agents(review))
    return conversation
