"""The agents' writes: taking a conversation over, handing it back, closing it, writing to the
customer, correcting a reply, reviewing a conversation, assigning it, marking it read, and the
inbox's bulk actions. Each sends its frames after its commit; the locks and the hand-over itself
are the chat's (``chat.services``). Who is online (for auto-assignment) lives in Redis."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Max
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone

from .. import dispatch, events, roles
from ..chat.services import (
    SendResult,
    Transition,
    check_open,
    conversation_locked,
    conversation_move,
    system_line_write,
    validate_client_id,
    validate_text,
)
from ..errors import ChatError
from ..knowledge import tasks as knowledge_tasks
from ..models import Conversation, ConversationEvent, ConversationRead, Correction, Message

MAX_TAGS = 20
MAX_TAG_CHARS = 40


@transaction.atomic
def conversation_takeover(*, conversation: Conversation, agent: User) -> Transition:
    """An agent joins: the bot stops (a reply in flight is cancelled) and stays silent."""
    conversation = conversation_locked(conversation)
    check_open(conversation)
    if conversation.status == Conversation.Status.AGENT and conversation.agent_id not in (None, agent.id):
        raise ChatError("held_by_another_agent", f"{roles.display_name(conversation.agent)} holds this conversation.")
    joins = conversation.status != Conversation.Status.AGENT  # a second takeover: nobody joined
    transition = conversation_move(conversation, Conversation.Status.AGENT, agent, actor=agent)
    if joins:
        system_line_write(conversation=conversation, text=joined_text(agent), author=agent)
    _assignee_set(conversation, agent, actor=agent)  # who takes it over has it assigned
    return transition


def joined_text(agent: User) -> str:
    return f"{roles.display_name(agent)} joined the conversation."


def left_text(agent: User | None) -> str:
    """The line when the holder hands back; without one (a waiting conversation handed back),
    only that the assistant answers again."""
    if agent is None:
        return "The assistant answers again."
    return f"{roles.display_name(agent)} left; the assistant answers again."


def closed_text(agent: User) -> str:
    return f"{roles.display_name(agent)} closed the conversation."


@transaction.atomic
def conversation_hand_back(*, conversation: Conversation, agent: User) -> Transition:
    """The agent gives the conversation back to the bot, which answers the next message.

    A conversation still waiting for an agent can be handed back too (a request made by mistake).
    """
    conversation = conversation_locked(conversation)
    if conversation.status != Conversation.Status.WAITING:
        _check_holder(conversation, agent)
    holder = conversation.agent if conversation.status == Conversation.Status.AGENT else None
    transition = conversation_move(conversation, Conversation.Status.BOT, None, actor=agent)
    system_line_write(conversation=conversation, text=left_text(holder), author=agent)
    return transition


@transaction.atomic
def conversation_close(*, conversation: Conversation, agent: User) -> Transition:
    conversation = conversation_locked(conversation)
    check_open(conversation)
    if conversation.status == Conversation.Status.AGENT:
        _check_holder(conversation, agent)
    # Written before the move, so the line comes before the closed status in the thread.
    system_line_write(conversation=conversation, text=closed_text(agent), author=agent)
    return conversation_move(conversation, Conversation.Status.CLOSED, conversation.agent, actor=agent)


def _check_holder(conversation: Conversation, agent: User) -> None:
    check_open(conversation)
    if conversation.status != Conversation.Status.AGENT:
        raise ChatError("not_with_agent", "No agent holds this conversation; take it over first.")
    if conversation.agent_id != agent.id and not agent.is_staff:
        raise ChatError("held_by_another_agent", f"{roles.display_name(conversation.agent)} holds this conversation.")


def agent_typing_send(*, conversation: Conversation, agent: User) -> bool:
    """Tell the customer that the agent holding the conversation types ("Dana is typing…");
    from anyone else, nothing. False when nothing was sent."""
    fresh = Conversation.objects.filter(id=conversation.id).values_list("status", "agent_id").first()
    if fresh is None or fresh != (Conversation.Status.AGENT, agent.id):
        return False
    events.send_on_commit(events.typing_sent(conversation.id, who="agent", name=roles.display_name(agent)))
    return True


def agent_message_send(
    *, conversation: Conversation, agent: User, text: object, client_id: object = None
) -> SendResult:
    """What the agent holding the conversation writes to the customer."""
    text = validate_text(text)
    client_id = validate_client_id(client_id)
    with transaction.atomic():
        locked = conversation_locked(conversation)
        if client_id is not None:
            seen = locked.messages.filter(client_id=client_id).first()
            if seen is not None:
                return SendResult(seen, None, created=False)
        _check_holder(locked, agent)
        message = Message.objects.create(
            conversation=locked, role=Message.Role.AGENT, text=text, client_id=client_id, author=agent
        )
        locked.last_activity_at = message.created_at
        locked.save(update_fields=["updated_at", "last_activity_at"])
        events.send_on_commit(events.message_sent(message), events.inbox_changed(locked))
        if knowledge_tasks.question_before(message) is not None:  # an answer to the customer's question
            knowledge_tasks.suggest_on_commit(message.id)
    return SendResult(message, None, created=True)


def correction_set(*, message: Message, text: object, author: User) -> Correction | None:
    """The reply the bot should have given; empty text removes the correction."""
    if message.role != Message.Role.BOT:
        raise ChatError("not_correctable", "Only a bot reply can be corrected.")
    if not isinstance(text, str):
        raise ChatError("empty_text", "A correction needs some text.")
    if len(text) > settings.CHAT_MAX_MESSAGE_CHARS * 4:
        raise ChatError("text_too_long", "This correction is too long.")
    correction = None
    if text.strip():
        correction, _ = Correction.objects.update_or_create(
            message=message, defaults={"text": text.strip(), "author": author}
        )
        knowledge_tasks.suggest_on_commit(message.id)  # what the agent taught: a suggestion
    else:
        Correction.objects.filter(message=message).delete()
    _review_sent(str(message.conversation_id), {"message_id": message.id, "correction": text.strip()})
    return correction


def tags_parse(raw: object) -> list[str]:
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
    tags: object = None,
    note: object = None,
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
    _review_sent(
        str(conversation.id),
        {
            "tags": conversation.tags,
            "note": conversation.note,
            "reviewed": conversation.reviewed,
            "exclude_from_training": conversation.exclude_from_training,
        },
    )
    return conversation


def _review_sent(conversation_id: str, review: dict[str, Any]) -> None:
    events.send_on_commit(events.to_agents(events.review_event(conversation_id, review)))


# Assignment: who a conversation is for (the inbox's "Mine"). Independent of who holds it
# (``Conversation.agent``, while the status is agent), though a takeover assigns the taker.


@transaction.atomic
def conversation_assign(*, conversation: Conversation, actor: User, assignee: User | None) -> Conversation:
    """Assign the conversation to ``assignee`` (an agent), or unassign it (None). Any agent may
    take, assign and unassign; while another agent holds the conversation only staff may give it
    to someone else. Writes an ``assigned``/``unassigned`` event; nothing when nothing changes."""
    conversation = conversation_locked(conversation)
    check_open(conversation)
    if assignee is not None and not roles.is_agent(assignee):
        raise ChatError("not_an_agent", f"{roles.display_name(assignee)} is not an agent.")
    held_by_other = conversation.status == Conversation.Status.AGENT and conversation.agent_id not in (None, actor.id)
    new_id = assignee.id if assignee is not None else None
    if held_by_other and not actor.is_staff and new_id != conversation.agent_id:
        raise ChatError("held_by_another_agent", f"{roles.display_name(conversation.agent)} holds this conversation.")
    _assignee_set(conversation, assignee, actor=actor)
    return conversation


def _assignee_set(conversation: Conversation, assignee: User | None, *, actor: User | None) -> ConversationEvent | None:
    """Within the caller's transaction, on the locked conversation: set the assignee, record the
    event and send it with the inbox row after the commit."""
    new_id = assignee.id if assignee is not None else None
    if conversation.assignee_id == new_id:
        return None
    conversation.assignee = assignee
    conversation.save(update_fields=["assignee", "updated_at"])
    kind = ConversationEvent.Kind.ASSIGNED if assignee is not None else ConversationEvent.Kind.UNASSIGNED
    event = ConversationEvent.objects.create(conversation=conversation, kind=kind, actor=actor, assignee=assignee)
    events.send_on_commit(events.inbox_changed(conversation), *events.activity_of(event))
    return event


def assignee_of(raw: object) -> User | None:
    """The user a posted ``assignee`` names: empty is nobody (unassign); anything else must be an
    active agent's id."""
    if raw in (None, ""):
        return None
    if not isinstance(raw, (str, int)) or not str(raw).isdigit():
        raise ChatError("invalid_assignee", "assignee must be an agent's id, or empty to unassign.")
    user = User.objects.filter(id=int(raw), is_active=True).first()
    if user is None or not roles.is_agent(user):
        raise ChatError("not_an_agent", "Choose one of the agents.")
    return user


# Read marks: how far each agent has read each conversation (unread counts).


def conversation_read(*, conversation: Conversation, user: User) -> ConversationRead:
    """``user`` has read the conversation up to now: its unread count for them clears, on all
    their pages (the ``read`` frame to their own group)."""
    now = timezone.now()
    read, _ = ConversationRead.objects.update_or_create(user=user, conversation=conversation, defaults={"read_at": now})
    events.send_on_commit(events.read_sent(user.id, conversation.id, now.isoformat()))
    return read


# Presence: which agents have a workspace page open now. A sorted set in Redis, one member per
# socket ("<user id>:<channel>") scored with when it stops counting; each socket refreshes its
# own, and drops it on closing. A socket that died without closing counts no longer after the TTL.


def _presence_key() -> str:
    return dispatch.key("agents:online")


def presence_touch(*, user_id: int, channel_name: str) -> None:
    expires = time.time() + settings.INBOX_PRESENCE_TTL_S
    dispatch.client().zadd(_presence_key(), {f"{user_id}:{channel_name}": expires})


def presence_drop(*, user_id: int, channel_name: str) -> None:
    dispatch.client().zrem(_presence_key(), f"{user_id}:{channel_name}")


def agents_online() -> set[int]:
    """The ids of users with a workspace socket open now (stale members are swept on the way)."""
    conn, now = dispatch.client(), time.time()
    conn.zremrangebyscore(_presence_key(), "-inf", now)
    members: list[str] = conn.zrangebyscore(_presence_key(), now, "+inf")  # type: ignore[assignment]
    return {int(member.split(":", 1)[0]) for member in members}


def next_assignee(online: Iterable[int]) -> User | None:
    """Round-robin: of the online agents, the one whose last assignment is oldest (never assigned
    comes first; ties by id). Within the caller's transaction."""
    # Locked: two handoffs at once are dealt in turn, the second seeing the first's assignment.
    users = User.objects.select_for_update().filter(id__in=set(online), is_active=True).order_by("id")
    candidates = [u for u in users if roles.is_agent(u)]
    if not candidates:
        return None
    last = dict(
        ConversationEvent.objects.filter(kind=ConversationEvent.Kind.ASSIGNED, assignee__in=candidates)
        .values("assignee")
        .annotate(at=Max("created_at"))
        .values_list("assignee", "at")
    )
    return min(candidates, key=lambda u: (last.get(u.id) is not None, last.get(u.id) or timezone.now(), u.id))


def conversation_auto_assign(conversation_id: Any) -> User | None:
    """With ``INBOX_AUTO_ASSIGN``: a conversation that waits for a person, assigned to nobody,
    goes to the next online agent. Who was picked, or None (off, nobody online, already taken)."""
    if not settings.INBOX_AUTO_ASSIGN:
        return None
    try:
        online = agents_online()
    except redis.RedisError:
        return None  # no presence, no guess: it stays in Unassigned
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().filter(id=conversation_id).first()
        if conversation is None or conversation.status != Conversation.Status.WAITING or conversation.assignee_id:
            return None
        assignee = next_assignee(online)
        if assignee is not None:
            _assignee_set(conversation, assignee, actor=None)
    return assignee


@receiver(post_save, sender=ConversationEvent, dispatch_uid="workspace-auto-assign")
def _handoff_recorded(sender: Any, instance: ConversationEvent, created: bool, **kwargs: Any) -> None:
    """Every handoff request, however made (a phrase, the button), is offered for auto-assignment
    once it commits."""
    if created and instance.kind == ConversationEvent.Kind.HANDOFF_REQUESTED and settings.INBOX_AUTO_ASSIGN:
        conversation_id = instance.conversation_id
        transaction.on_commit(lambda: conversation_auto_assign(conversation_id), robust=True)


# Bulk actions on the inbox's selection: each conversation through the same service as a single
# action, in its own transaction; what was refused is named with why.


@dataclass
class BulkResult:
    done: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


BULK_ACTIONS = ("close", "tag", "reviewed", "exclude", "assign")


def conversations_bulk(
    *, conversations: Iterable[Conversation], action: str, agent: User, tag: object = None, assignee: object = None
) -> BulkResult:
    if action not in BULK_ACTIONS:
        raise ChatError("invalid_action", f"action must be one of {', '.join(BULK_ACTIONS)}.")
    if action == "tag":
        tags = tags_parse(tag if tag is not None else "")
        if not tags:
            raise ChatError("invalid_tags", "Name the tag to add.")
    target = assignee_of(assignee) if action == "assign" else None
    steps: dict[str, Callable[[Conversation], Any]] = {
        "close": lambda c: conversation_close(conversation=c, agent=agent),
        "tag": lambda c: conversation_review(conversation=c, tags=list(dict.fromkeys([*c.tags, *tags]))),
        "reviewed": lambda c: conversation_review(conversation=c, reviewed=True),
        "exclude": lambda c: conversation_review(conversation=c, exclude_from_training=True),
        "assign": lambda c: conversation_assign(conversation=c, actor=agent, assignee=target),
    }
    result = BulkResult()
    for conversation in conversations:
        try:
            with transaction.atomic():
                steps[action](conversation)
        except ChatError as error:
            result.skipped.append(
                {"id": str(conversation.id), "customer": str(conversation.customer), "reason": error.detail}
            )
        else:
            result.done.append(str(conversation.id))
    return result
