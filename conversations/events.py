"""The only code that talks to the channel layer.

Two kinds of group. Every event for a conversation goes to its group, ``conversation.<uuid>``,
which the customer's sockets and the agents watching it join: only frames a customer may see go
there, and ``for_customer`` filters again on the customer's side. Everything agent-only (the inbox,
ratings, notes, corrections, tags) goes to the ``agents`` group, which only agent sockets join.
Payloads are the wire frames of docs/protocol.md.

A write names its frames as ``Event``s and sends them with ``send_on_commit``: an action sends
its events, after its commit, so no frame tells of a row that a rollback took back. A socket runs
its writes through ``in_database``: the write's events wait in an outbox while it runs on the
database thread, and are sent from the event loop once it returns, so the one thread that all of a
web process's database calls share never waits on Redis (docs/web-tier.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar
from uuid import UUID

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from django.db import transaction

from . import selectors
from .models import Conversation, ConversationEvent, Message

EVENT_HANDLER = "conversation.event"  # dispatched to ``conversation_event`` on each consumer
AGENTS_GROUP = "agents"
AGENTS_HANDLER = "agents.event"  # dispatched to ``agents_event`` on agent consumers
# One agent's own sockets (all their tabs), ``agent.<user id>``: what is theirs alone, such as
# "you have read this conversation". Only agent sockets join it.
AGENT_GROUP_PREFIX = "agent."

# What may reach a customer's socket, frame type by frame type, and the keys each may carry: every
# frame the chat socket sends passes ``for_customer``, so a key not listed here never reaches it.
CUSTOMER_FRAMES: dict[str, set[str]] = {
    "history": {"type", "conversation", "messages", "feedback", "customer", "worker", "worker_online"},
    "profile": {"type", "customer"},
    "message": {"type", "message"},
    "delta": {"type", "message_id", "offset", "text"},
    "done": {"type", "message_id", "text", "status", "error", "error_code", "sources"},
    "status": {"type", "conversation"},
    "notice": {"type", "code", "detail"},
    "feedback": {"type", "message_id", "feedback"},
    "satisfaction": {"type", "score"},
    "error": {"type", "code", "detail"},
    "typing": {"type", "who", "name"},  # only an agent's: a customer never hears their own typing
}
# Not "model", "model_version" nor "grounding": which version answered, and from which knowledge
# entries (ids, scores), is the agents' business. "sources" is the entries' questions, and empty
# unless the admin turned KNOWLEDGE_SHOW_SOURCES on.
CUSTOMER_MESSAGE_KEYS = {
    "id",
    "role",
    "text",
    "status",
    "client_id",
    "created_at",
    "first_token_at",
    "finished_at",
    "token_count",
    "error",
    "error_code",
    "author",
    "sources",
}
CUSTOMER_CONVERSATION_KEYS = {"id", "status", "created_at", "agent", "satisfaction"}
CUSTOMER_FEEDBACK_KEYS = {"positive", "reason", "comment"}

# What a customer reads when a reply failed, whatever the reason: the reason itself (engine errors,
# file paths, version names) is for the agents, who see it in their workspace.
REPLY_FAILED = "reply_failed"
REPLY_FAILED_TEXT = "Sorry, something went wrong while answering. Please try again."


def group_name(conversation_id: UUID | str) -> str:
    return f"conversation.{conversation_id}"


# A widget customer's own sockets (those that came with a token), whatever conversation they show:
# what closes them all when the customer's tokens are revoked.
SIGNED_OUT = "signed_out"


def customer_group(customer_id: UUID | str) -> str:
    return f"customer.{customer_id}"


def customer_signed_out(customer_id: UUID | str) -> Event:
    """Every token socket of the customer closes with 4401 (``ChatConsumer``); agents hear nothing."""
    return Event(customer_group(customer_id), {"type": SIGNED_OUT})


@dataclass(frozen=True)
class Event:
    """A frame and its recipients: one conversation's group, or the agents' group."""

    group: str
    payload: dict[str, Any]

    @property
    def handler(self) -> str:
        agents_only = self.group == AGENTS_GROUP or self.group.startswith(AGENT_GROUP_PREFIX)
        return AGENTS_HANDLER if agents_only else EVENT_HANDLER


def to_conversation(conversation_id: UUID | str, payload: dict[str, Any]) -> Event:
    """For the conversation's customer and the agents watching it: customer-safe frames only."""
    return Event(group_name(conversation_id), payload)


def to_agents(payload: dict[str, Any]) -> Event:
    return Event(AGENTS_GROUP, payload)


log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

# The events of the write running now, when it runs under ``in_database``: sent after it returns.
_outbox: ContextVar[list[Event] | None] = ContextVar("events_outbox", default=None)


def send_on_commit(*events: Event) -> None:
    """Send the events once the current transaction commits (at once outside one). Robust: the
    write stands when Redis refuses the frames, and a page that reconnects reads it from history."""
    transaction.on_commit(lambda: deliver(events), robust=True)


def deliver(events: Sequence[Event]) -> None:
    outbox = _outbox.get()
    if outbox is not None:  # a socket's write: its caller sends them from the event loop
        outbox.extend(events)
        return
    # Not a socket's write (a page, a task, a command): inbox rows are read here, on this thread.
    async_to_sync(_send_all)(as_sent(events))


def as_sent(events: Sequence[Event]) -> list[Event]:
    """The events as their frames go out: each ``inbox_touched`` read into its ``inbox`` row."""
    return [sent for sent in map(_resolved, events) if sent.payload]


def _resolved(event: Event) -> Event:
    if event.payload.get("type") != INBOX_TOUCHED:
        return event
    rows = selectors.inbox_items([event.payload["conversation_id"]])
    return to_agents(inbox_event(rows[0])) if rows else Event(AGENTS_GROUP, {})


class InboxAnnouncer:
    """The web process's inbox announcements: the conversations touched (``inbox_touched``) within
    ``delay_s`` are read together, in one database call (``selectors.inbox_items``), and each
    row goes to the agents' group. One per event loop (``_announcer``). A customer message costs
    the inbox one id in a set, not four queries of its own; a conversation touched many times in a
    round is announced once."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.pending: set[str] = set()
        self.flushing: asyncio.Task[None] | None = None

    def touch(self, conversation_id: str) -> None:
        self.pending.add(conversation_id)
        if self.flushing is None or self.flushing.done():
            self.flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(self.delay_s)
        ids, self.pending = self.pending, set()
        try:
            rows = await database_sync_to_async(selectors.inbox_items)(sorted(ids))
            if rows:  # one group send for the round: each agent socket gets one frame a row
                await _group_send([to_agents(inbox_event(row)) for row in rows])
        except Exception:  # the rows are stored: an agent's page that reloads reads them
            log.exception("could not announce %d inbox rows", len(ids))
        if self.pending:  # touched while this round read and sent
            self.flushing = asyncio.get_running_loop().create_task(self._flush())


_announcers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, InboxAnnouncer] = weakref.WeakKeyDictionary()


def _announcer() -> InboxAnnouncer | None:
    """The running event loop's announcer (a web process has one loop); None with
    ``INBOX_COALESCE_MS`` 0, which reads each row as it is sent."""
    if settings.INBOX_COALESCE_MS <= 0:
        return None
    loop = asyncio.get_running_loop()
    announcer = _announcers.get(loop)
    if announcer is None:
        announcer = _announcers[loop] = InboxAnnouncer(settings.INBOX_COALESCE_MS / 1000)
    return announcer


@contextmanager
def outbox_collect(outbox: list[Event] | None = None) -> Iterator[list[Event]]:
    """Within the block, what the writes on this thread deliver is added to ``outbox`` (yielded)
    instead of being sent: ``in_database`` sends it afterwards."""
    outbox = [] if outbox is None else outbox
    token = _outbox.set(outbox)
    try:
        yield outbox
    finally:
        _outbox.reset(token)


def in_database(function: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``function`` (sync, the database) as a socket calls it: on the database thread, as
    ``database_sync_to_async`` runs it, with the events its commits send kept in an outbox and sent
    from the caller's event loop once it has returned, in order. The thread is free for the next
    socket's call while the frames go out; a frame Redis refuses is logged, and the write stands."""

    @functools.wraps(function)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        outbox: list[Event] = []

        def run() -> R:
            with outbox_collect(outbox):
                return function(*args, **kwargs)

        try:
            return await database_sync_to_async(run)()
        finally:
            if outbox:
                try:
                    await _send_all(outbox, coalesce=True)
                except Exception:  # as send_on_commit's robust=True: the write is committed
                    log.exception("could not send %d frames after a write", len(outbox))

    return call


async def _send_all(events: Sequence[Event], *, coalesce: bool = False) -> None:
    """The events to their groups, in order: consecutive events for one group go as one
    channel-layer message (``payloads``), one group send instead of several. ``coalesce``: inbox
    rows through the loop's announcer."""
    batch: list[Event] = []
    for event in events:
        if event.payload.get("type") == INBOX_TOUCHED:
            announcer = _announcer() if coalesce else None
            if announcer is not None:
                announcer.touch(event.payload["conversation_id"])
                continue
            event = await database_sync_to_async(_resolved)(event)
        if not event.payload:  # a row of a conversation erased meanwhile
            continue
        if batch and (batch[0].group, batch[0].handler) != (event.group, event.handler):
            await _group_send(batch)
            batch = []
        batch.append(event)
    if batch:
        await _group_send(batch)


async def _group_send(batch: Sequence[Event]) -> None:
    first = batch[0]
    if len(batch) == 1:
        message: dict[str, Any] = {"type": first.handler, "payload": first.payload}
    else:
        message = {"type": first.handler, "payloads": [event.payload for event in batch]}
    await channel_layer().group_send(first.group, message)


def payloads_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The frames a channel-layer message from ``_send_all`` carries, in order (one or several)."""
    payloads = message.get("payloads")
    return list(payloads) if payloads is not None else [message["payload"]]


async def publish(conversation_id: UUID | str, payload: dict[str, Any]) -> None:
    """One frame to a conversation's group now: for the worker, which publishes after its own saves."""
    await _send_all([to_conversation(conversation_id, payload)])


def message_event(message_payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "message": message_payload}


def delta_event(message_id: int, offset: int, text: str) -> dict[str, Any]:
    return {"type": "delta", "message_id": message_id, "offset": offset, "text": text}


def done_event(
    message_id: int, text: str, status: str, error: str = "", sources: list[str] | None = None
) -> dict[str, Any]:
    """A reply's end; ``sources``: the lines the customer reads under it, a key only when there are
    some (KNOWLEDGE_SHOW_SOURCES on, and the reply grounded)."""
    frame = {"type": "done", "message_id": message_id, "text": text, "status": status, "error": error}
    return {**frame, "sources": sources} if sources else frame


def typing_event(*, who: str, name: str) -> dict[str, Any]:
    """Someone is typing in the conversation: ``who`` "agent" (the customer sees it) or "customer"
    (the agents watching see it). Sent at most once a second a socket (``chat.services.TypingThrottle``)."""
    return {"type": "typing", "who": who, "name": name}


def typing_sent(conversation_id: UUID | str, *, who: str, name: str) -> Event:
    return to_conversation(conversation_id, typing_event(who=who, name=name))


def status_event(conversation_payload: dict[str, Any]) -> dict[str, Any]:
    """The conversation's state changed: who holds it, whether it is closed."""
    return {"type": "status", "conversation": conversation_payload}


def for_customer(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The frame as a customer may see it, or None when it is not for customers at all.

    Every frame a customer's socket sends passes here, whether it came through the conversation
    group or straight from the consumer: the group should only ever carry customer-safe frames,
    and this is the second lock, so a frame sent the wrong way still cannot leak agent-only data.
    Idempotent: a filtered frame passes again unchanged.
    """
    allowed = CUSTOMER_FRAMES.get(payload.get("type", ""))
    if allowed is None:
        return None
    frame = {k: v for k, v in payload.items() if k in allowed}
    if frame["type"] == "typing" and frame.get("who") != "agent":
        return None
    if frame["type"] == "done":
        frame.update(_customer_error(frame))
    if "message" in frame:
        frame["message"] = _customer_message(frame["message"])
        if frame["message"] is None:
            return None
    if "messages" in frame:
        messages = frame["messages"] if isinstance(frame["messages"], list) else []
        frame["messages"] = [m for m in map(_customer_message, messages) if m is not None]
    if "conversation" in frame:
        if not isinstance(frame["conversation"], dict):
            return None
        frame["conversation"] = _only(frame["conversation"], CUSTOMER_CONVERSATION_KEYS)
    if frame["type"] == "history":
        ratings = frame.get("feedback")
        ratings = ratings if isinstance(ratings, dict) else {}
        frame["feedback"] = {k: _only(v, CUSTOMER_FEEDBACK_KEYS) for k, v in ratings.items() if isinstance(v, dict)}
    if frame["type"] == "feedback" and frame.get("feedback") is not None:
        feedback = frame["feedback"]
        frame["feedback"] = _only(feedback, CUSTOMER_FEEDBACK_KEYS) if isinstance(feedback, dict) else None
    return frame


def _customer_message(message: Any) -> dict[str, Any] | None:
    if not isinstance(message, dict):
        return None
    return {**_only(message, CUSTOMER_MESSAGE_KEYS), **_customer_error(message)}


def _customer_error(item: dict[str, Any]) -> dict[str, str]:
    """The fixed error a customer reads for a failed reply (and its code), in place of the stored one."""
    if item.get("status") == "failed":
        return {"error": REPLY_FAILED_TEXT, "error_code": REPLY_FAILED}
    return {"error": "", "error_code": ""} if "error" in item else {}


def _only(item: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k in keys}


# The agents' group: the inbox and everything agent-only.


async def agents_join(channel_name: str) -> None:
    await channel_layer().group_add(AGENTS_GROUP, channel_name)


async def agents_leave(channel_name: str) -> None:
    await channel_layer().group_discard(AGENTS_GROUP, channel_name)


async def conversation_join(conversation_id: UUID | str, channel_name: str) -> None:
    await channel_layer().group_add(group_name(conversation_id), channel_name)


async def conversation_leave(conversation_id: UUID | str, channel_name: str) -> None:
    await channel_layer().group_discard(group_name(conversation_id), channel_name)


async def customer_join(customer_id: UUID | str, channel_name: str) -> None:
    await channel_layer().group_add(customer_group(customer_id), channel_name)


async def customer_leave(customer_id: UUID | str, channel_name: str) -> None:
    await channel_layer().group_discard(customer_group(customer_id), channel_name)


async def publish_agents(payload: dict[str, Any]) -> None:
    await _send_all([to_agents(payload)])


def channel_layer() -> BaseChannelLayer:
    """The configured layer: every send and join in the project goes through here."""
    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS is not configured"
    return layer


def inbox_event(item: dict[str, Any], *, alert: bool = False) -> dict[str, Any]:
    """A conversation to add or refresh in the inbox; ``alert`` when it waits for an agent."""
    return {"type": "inbox", "conversation": item, "alert": alert}


def review_event(conversation_id: str, review: dict[str, Any]) -> dict[str, Any]:
    """Agent-only state of a conversation or a reply changed (tags, note, flags, rating, correction)."""
    return {"type": "review", "conversation_id": conversation_id, **review}


# Not a frame: "this conversation's inbox row changed", resolved into its ``inbox`` frame when sent.
INBOX_TOUCHED = "inbox.touched"


def inbox_touched(conversation: Conversation) -> Event:
    """The conversation's inbox row changed (a customer wrote): its ``inbox`` frame, built when it
    is sent. In the web process the announcer (``coalesce_inbox``) builds the rows of all the
    conversations touched within ``INBOX_COALESCE_MS`` together, one frame each; elsewhere the row
    is read at once, as ``inbox_changed`` does."""
    return Event(AGENTS_GROUP, {"type": INBOX_TOUCHED, "conversation_id": str(conversation.id)})


def inbox_changed(conversation: Conversation, *, alert: bool = False) -> Event:
    """The conversation's inbox row, read afresh; ``alert`` only counts while it waits for an agent."""
    return _inbox_row(selectors.conversation_fresh(conversation.id), alert=alert)


def status_changed(conversation: Conversation, *, alert: bool = False) -> list[Event]:
    """A conversation changed hands or closed: its group hears the new state, and the inbox too."""
    fresh = selectors.conversation_fresh(conversation.id)
    return [to_conversation(fresh.id, _status(fresh)), _inbox_row(fresh, alert=alert)]


def status_frame(conversation: Conversation) -> dict[str, Any]:
    """The conversation's state as stored now, as its ``status`` frame."""
    return _status(selectors.conversation_fresh(conversation.id))


def _status(fresh: Conversation) -> dict[str, Any]:
    return status_event(selectors.conversation_payload(fresh))


def _inbox_row(fresh: Conversation, *, alert: bool) -> Event:
    return to_agents(
        inbox_event(selectors.inbox_item(fresh), alert=alert and fresh.status == Conversation.Status.WAITING)
    )


def message_sent(message: Message) -> Event:
    """A message, new or changed, for the conversation's group."""
    return to_conversation(message.conversation_id, message_event(selectors.message_payload(message)))


def reply_done(message: Message) -> Event:
    return to_conversation(message.conversation_id, done_event(message.id, message.text, message.status, message.error))


def activity_event(conversation_id: str, activity: dict[str, Any]) -> dict[str, Any]:
    """Something happened to a conversation (``selectors.activity_payload``): agents only."""
    return {"type": "activity", "conversation_id": conversation_id, "event": activity}


def activity_of(event: ConversationEvent | None) -> list[Event]:
    """A conversation event (asked for a person, taken over, assigned…) for the agents' threads;
    nothing for None."""
    if event is None:
        return []
    return [to_agents(activity_event(str(event.conversation_id), selectors.activity_payload(event)))]


# One agent's own sockets: what concerns them alone (how far they have read).


def agent_group(user_id: int) -> str:
    return f"{AGENT_GROUP_PREFIX}{user_id}"


async def agent_join(user_id: int, channel_name: str) -> None:
    await channel_layer().group_add(agent_group(user_id), channel_name)


async def agent_leave(user_id: int, channel_name: str) -> None:
    await channel_layer().group_discard(agent_group(user_id), channel_name)


def read_event(conversation_id: str, read_at: str) -> dict[str, Any]:
    """The agent has read the conversation up to ``read_at``: their pages clear its unread count."""
    return {"type": "read", "conversation_id": conversation_id, "read_at": read_at, "unread": 0}


def read_sent(user_id: int, conversation_id: UUID | str, read_at: str) -> Event:
    return Event(agent_group(user_id), read_event(str(conversation_id), read_at))
