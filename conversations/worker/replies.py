"""A reply's lifecycle in the worker: claimed and prepared, saved as it grows, finished, published.

The database is the truth. Publishing (deltas, done) is best effort: a Redis outage mid-reply
does not drop the reply, its progress and final save go on, and what could not be published is
published once Redis is back (a browser that reconnects meanwhile gets it from history).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from .. import events, prompts, selectors
from ..inference.types import Engine, GenerationRequest, TokenChunk
from ..knowledge import retrieval
from ..knowledge import selectors as knowledge_selectors
from ..models import Message
from . import services

log = logging.getLogger(__name__)

# The database is down or was restarted: the reply is retried, not failed.
DATABASE_DOWN = (OperationalError, InterfaceError)


class ReplyRefused(Exception):
    """The reply cannot be generated; the message is stored for the agents (no file paths). The
    customer reads ``events.REPLY_FAILED_TEXT`` instead, as for every failed reply."""


@dataclass
class Reply:
    """A reply the worker has claimed, from the stream entry to the final save and the ack."""

    message_id: int
    conversation_id: str
    entry_id: str
    model_name: str
    text: str = ""
    sent: int = 0  # characters already published as deltas
    token_count: int = 0
    first_token_at: datetime | None = None
    finish: TokenChunk | None = None
    silenced: bool = False  # its conversation left the bot: nothing more is published
    stored: bool = False  # the final save is done: only its done frame and the ack may be left
    done: dict[str, Any] | None = None  # the done frame, kept until it is published
    adapter: str | None = None  # the version's adapter it is generated with: not unloaded meanwhile


@dataclass
class Prepared:
    reply: Reply
    request: GenerationRequest
    adapter_path: str = ""
    told_busy: bool = False
    announced: dict[str, Any] | None = None  # the claimed reply's message frame payload, read with the claim


def unservable_error(version: str) -> str:
    return f"The assistant's version {version} cannot answer right now. Please try again in a moment."


def prepare(*, message_id: int, entry_id: str, engine: Engine, consumer: str) -> Prepared | None:
    """Claim the reply in the database and build its generation request (runs in a thread)."""
    message = services.reply_claim(message_id=message_id, consumer=consumer)
    if message is None:
        return None
    sampling = prompts.sampling_from_settings()
    version = message.model_version
    adapter = version.name if version is not None and version.adapter_path else None
    if version is not None and adapter and version.serve_error:
        raise ReplyRefused(unservable_error(version.name))
    model_name = engine.model_name + (f"+{adapter}" if adapter else "")
    grounded = retrieval.grounding_for(message)
    references = grounded.references
    if references:  # greedy: a small model copies a fact's figures more faithfully than it samples them
        sampling = replace(sampling, temperature=0.0)
    # A clear best entry leads the reply with its approved answer: a small model rarely copies a
    # fact from its prompt (docs/knowledge.md), so the prompt ends with the answer already begun
    # and the model goes on from it (or ends the reply there).
    lead = retrieval.lead_for(grounded)
    grounding: list[dict[str, Any]] = [{"entry": r.entry_id, "score": r.score} for r in references]
    if lead:
        grounding[0]["lead"] = True
    services.reply_model_set(message_id=message.id, model_name=model_name, grounding=grounding)
    message.model_name, message.grounding = model_name, grounding
    prompt_ids = prompts.prompt_for(
        message,
        engine.tokenizer,
        max_new_tokens=sampling.max_new_tokens,
        max_positions=engine.max_positions,
        references=references,
    )
    if lead:  # the lead's tokens come out of the reply's budget, so the context still holds it all
        text = prompts.neutralise(lead, prompts.control_strings(engine.tokenizer))  # data, as in the prompt
        lead_ids = engine.tokenizer.encode(text, add_special_tokens=False)
        prompt_ids += lead_ids
        sampling = replace(sampling, max_new_tokens=max(1, sampling.max_new_tokens - len(lead_ids)))
    request = GenerationRequest(
        request_id=str(message.id),
        prompt_ids=tuple(prompt_ids),
        sampling=sampling,
        adapter=adapter,
        timeout_s=settings.INFERENCE_REPLY_TIMEOUT_S,
    )
    reply = Reply(
        message.id,
        str(message.conversation_id),
        entry_id,
        model_name,
        lead,
        first_token_at=timezone.now() if lead else None,
        adapter=adapter,
    )
    adapter_path = version.adapter_path if adapter and version else ""
    return Prepared(reply, request, adapter_path, announced=selectors.message_payload(message))


reply_prepare = database_sync_to_async(prepare)


async def publish_quietly(conversation_id: str, event: dict[str, Any]) -> bool:
    """Publish, or say it could not (Redis down): the caller tries again later or lets history tell."""
    try:
        await events.publish(conversation_id, event)
    except Exception as error:
        log.warning("could not publish a %s frame: %s", event.get("type"), error)
        return False
    return True


async def announce_claimed(reply: Reply, payload: dict[str, Any] | None = None) -> None:
    """Browsers hear the reply is streaming (and drop any partial text of an earlier attempt);
    ``payload``: the message as ``prepare`` read it with the claim (else it is read again)."""
    if payload is None:
        payload = await database_sync_to_async(selectors.message_payload_by_id)(reply.message_id)
    await publish_quietly(reply.conversation_id, events.message_event(payload))


async def fail(*, message_id: int, error: str, notice: dict[str, Any] | None = None) -> None:
    """A reply that cannot be generated is stored as failed, with its reason for the agents (the
    customer's socket replaces it with the fixed text, ``events.for_customer``), then ``notice``."""
    message = await database_sync_to_async(services.reply_finish)(
        message_id=message_id, text="", finish_reason="error", token_count=0, error=error
    )
    if message is not None:
        done = events.done_event(message.id, "", message.status, message.error)
        await publish_quietly(str(message.conversation_id), done)
        if notice is not None:
            await publish_quietly(str(message.conversation_id), notice)


async def tell(reply: Reply, notice: dict[str, Any]) -> None:
    """A notice about the reply (it waits for the engine), best effort."""
    await publish_quietly(reply.conversation_id, notice)


async def progress_save(replies: dict[int, Reply]) -> set[int]:
    """Save the new text of every reply still being written; the ids returned may not be written
    any more (a person holds the conversation, or the reply is gone)."""
    unsent = {
        r.message_id: (r.text, r.token_count, r.first_token_at or timezone.now())
        for r in replies.values()
        if len(r.text) > r.sent and not r.silenced and not r.stored
    }
    if not unsent:
        return set()
    return await database_sync_to_async(services.reply_progress)(updates=unsent)


async def deltas_publish(reply: Reply, text: str) -> None:
    """Publish what was saved and not yet sent; on failure the next flush sends it from the same offset."""
    if len(text) > reply.sent and not reply.silenced and not reply.stored:
        delta = events.delta_event(reply.message_id, reply.sent, text[reply.sent :])
        if await publish_quietly(reply.conversation_id, delta):
            reply.sent = len(text)


async def finish_save(reply: Reply) -> None:
    """The final save, once; its done frame is kept on the reply until it is published."""
    chunk = reply.finish
    assert chunk is not None and chunk.finish_reason is not None
    error = chunk.error or ("the reply took too long" if chunk.finish_reason == "timeout" else "")
    text, finish_reason = reply.text, chunk.finish_reason
    if reply.silenced:  # the worker stopped it: keep only what the customer saw
        text, finish_reason = text[: reply.sent], "cancelled"
    stored = await database_sync_to_async(services.reply_finish)(
        message_id=reply.message_id,
        text=text,
        finish_reason=finish_reason,
        token_count=reply.token_count,
        first_token_at=reply.first_token_at,
        error=error,
    )
    reply.stored = True
    if stored is not None:
        sources = await _sources(stored)
        reply.done = events.done_event(stored.id, stored.text, stored.status, stored.error, sources)
    log.info("reply %s %s: %d tokens", reply.message_id, chunk.finish_reason, reply.token_count)


async def _sources(message: Message) -> list[str]:
    """The source lines a customer reads under the reply; no database trip when there are none."""
    if not settings.KNOWLEDGE_SHOW_SOURCES or not message.grounding:
        return []
    lines = await database_sync_to_async(knowledge_selectors.source_lines)([message.grounding])
    return lines[0]


async def done_publish(reply: Reply) -> bool:
    """Whether nothing is left to publish for this finished reply."""
    if reply.done is not None and not await publish_quietly(reply.conversation_id, reply.done):
        return False
    reply.done = None
    return True
