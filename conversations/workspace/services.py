"""The agents' writes: taking a conversation over, handing it back, closing it, writing to the
customer, correcting a reply, reviewing a conversation. Each sends its frames after its commit;
the locks and the hand-over itself are the chat's (``chat.services``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from .. import events, roles
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
from ..models import Conversation, Correction, Message

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
