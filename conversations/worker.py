"""The inference worker: claims reply requests from Redis, feeds the engine, streams text back.

Two threads. The engine thread owns the model and runs its decode loop (``engine.run``); this
module's asyncio loop does all I/O: it reads the request stream, builds prompts from the database,
listens for stops, and every ``flush_ms`` saves each streaming reply's text so far and publishes
one ``delta`` per reply, so the channel layer carries a bounded number of messages per reply.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from . import dispatch, events, prompts, selectors, services
from .inference.types import GenerationRequest, QueueFull, SamplingParams, TokenChunk
from .models import BotSettings, Message

log = logging.getLogger(__name__)

FINISH_STATUS = {
    "stop": Message.Status.COMPLETE,
    "length": Message.Status.COMPLETE,
    "cancelled": Message.Status.CANCELLED,
    "timeout": Message.Status.FAILED,
    "error": Message.Status.FAILED,
}


class EngineLike(Protocol):
    tokenizer: Any
    model_name: str

    def submit(self, request: GenerationRequest) -> None: ...
    def cancel(self, request_id: str) -> None: ...
    def run(self, emit: Any, stop: threading.Event) -> None: ...
    def load_adapter(self, name: str, path: Any) -> None: ...
    def metrics(self) -> dict[str, Any]: ...


@dataclass
class Reply:
    """A reply the worker has claimed, from the stream entry to the final save."""

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


@dataclass
class Prepared:
    reply: Reply
    request: GenerationRequest
    adapter_path: str = ""
    told_busy: bool = False


HEARTBEAT_EVERY_S = 3
HEARTBEAT_TTL_S = 10  # a worker silent this long is dead: its unfinished entries are claimed
RECOVER_TICK_S = 5
RECOVER_SWEEP_EVERY = 6  # ticks: the database sweep for lost requests runs every 30 s
ORPHAN_MIN_IDLE_MS = 1000

BUSY_NOTICE = {
    "type": "notice",
    "code": "busy",
    "detail": "Many customers are chatting right now: your answer will start in a moment.",
}


def sampling_from_settings() -> SamplingParams:
    seed = settings.GENERATION_SEED
    return SamplingParams(
        temperature=settings.GENERATION_TEMPERATURE,
        top_p=settings.GENERATION_TOP_P,
        top_k=settings.GENERATION_TOP_K,
        repetition_penalty=settings.GENERATION_REPETITION_PENALTY,
        max_new_tokens=settings.GENERATION_MAX_NEW_TOKENS,
        seed=int(seed) if seed not in (None, "") else None,
    )


def prompt_for(message: Message, tokenizer: Any, *, max_new_tokens: int, max_positions: int | None = None) -> list[int]:
    """The chat-template token ids for answering ``message``, from the stored history before it.

    The prompt leaves room for ``max_new_tokens`` within ``INFERENCE_CONTEXT_TOKENS`` and within the
    model's own context (``max_positions``). History is counted turn by turn, then the templated
    prompt is measured: when the template's markup makes it overflow, fewer turns are kept.
    """
    history = [prompts.Turn(m.role, m.text) for m in message.conversation.messages.filter(id__lt=message.id)]
    system_prompt = BotSettings.load().system_prompt or settings.DEFAULT_SYSTEM_PROMPT
    context = min(settings.INFERENCE_CONTEXT_TOKENS, max_positions or settings.INFERENCE_CONTEXT_TOKENS)
    limit = max(context - max_new_tokens, 1)
    budget = limit
    for _ in range(4):
        chat = prompts.build_chat(
            system_prompt=system_prompt,
            history=history,
            count_tokens=lambda text: len(tokenizer.encode(text, add_special_tokens=False)),
            budget_tokens=budget,
        )
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # some tokenizers return a BatchEncoding
            ids = ids["input_ids"]
        overflow = len(ids) - limit
        if overflow <= 0:
            return list(ids)
        budget -= overflow
    return list(ids)[-limit:]  # a system prompt alone longer than the context: keep the question


def prepare(message_id: int, entry_id: str, engine: EngineLike) -> Prepared | None:
    """Claim the reply in the database and build its generation request (runs in a thread)."""
    message = services.reply_claim(message_id=message_id)
    if message is None:
        return None
    sampling = sampling_from_settings()
    version = message.model_version
    adapter = version.name if version is not None and version.adapter_path else None
    model_name = engine.model_name + (f"+{adapter}" if adapter else "")
    Message.objects.filter(id=message.id).update(model_name=model_name)
    request = GenerationRequest(
        request_id=str(message.id),
        prompt_ids=tuple(
            prompt_for(
                message,
                engine.tokenizer,
                max_new_tokens=sampling.max_new_tokens,
                max_positions=getattr(engine, "max_positions", None),
            )
        ),
        sampling=sampling,
        adapter=adapter,
        timeout_s=settings.INFERENCE_REPLY_TIMEOUT_S,
    )
    reply = Reply(message.id, str(message.conversation_id), entry_id, model_name)
    return Prepared(reply, request, version.adapter_path if adapter and version else "")


@dataclass
class InferenceWorker:
    engine: EngineLike
    consumer: str = field(default_factory=lambda: f"worker-{socket.gethostname()}")
    flush_ms: int = 80
    stop_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.redis = aioredis.Redis.from_url(
            settings.REDIS_URL,
            decode_responses=True,
            socket_timeout=None,  # pub/sub waits indefinitely
        )
        self.replies: dict[int, Reply] = {}
        self.waiting: deque[Prepared] = deque()  # the engine's queue was full: retried in order
        self.adapters: set[str] = set()
        self.chunks: asyncio.Queue[list[TokenChunk]] = asyncio.Queue()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await self._ensure_group()
        engine_thread = threading.Thread(
            target=self.engine.run,
            args=(lambda chunks: loop.call_soon_threadsafe(self.chunks.put_nowait, chunks), self.stop_event),
            name="engine",
            daemon=True,
        )
        engine_thread.start()
        await self._beat()  # alive before reading, so no other worker takes this one's entries
        tasks = [
            asyncio.create_task(coro)
            for coro in (
                self._read(),
                self._recover(),
                self._listen_cancel(),
                self._collect(),
                self._flush(),
                self._heartbeat(),
            )
        ]
        log.info("inference worker %s serving %s", self.consumer, self.engine.model_name)
        try:
            await asyncio.to_thread(self.stop_event.wait)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(engine_thread.join, 10)  # its last step still emits into this loop
            await self.redis.delete(dispatch.key(dispatch.HEARTBEAT), dispatch.alive_key(self.consumer))
            await self.redis.aclose()

    async def _ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(
                dispatch.key(dispatch.GENERATE_STREAM), dispatch.WORKER_GROUP, id="0", mkstream=True
            )
        except aioredis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def _read(self) -> None:
        """First this consumer's own unacknowledged entries (a previous life died mid-reply), then new ones."""
        stream = dispatch.key(dispatch.GENERATE_STREAM)
        cursor = "0"  # an id: walk this consumer's pending entries; ">" afterwards: new entries
        while not self.stop_event.is_set():
            response = await self.redis.xreadgroup(
                dispatch.WORKER_GROUP, self.consumer, {stream: cursor}, count=16, block=500
            )
            entries = response[0][1] if response else []
            if cursor != ">":
                cursor = entries[-1][0] if entries else ">"
            for entry_id, fields in entries:
                await self._admit(entry_id, int(fields["message_id"]))

    async def _recover(self) -> None:
        """Take over what a dead worker left behind, and queue again what never reached the stream."""
        ticks = 0
        while True:
            try:
                await self._claim_orphans()
                if ticks % RECOVER_SWEEP_EVERY == 0:
                    await self._requeue_lost()
            except Exception:
                log.exception("recovery pass failed; retrying at the next tick")
            ticks += 1
            await asyncio.sleep(RECOVER_TICK_S)

    async def _claim_orphans(self) -> None:
        """Entries delivered to a consumer whose heartbeat has expired (killed, or gone for good under
        another name) are claimed by this one and answered: ``reply_claim`` restarts a half-written reply."""
        stream = dispatch.key(dispatch.GENERATE_STREAM)
        pending = await self.redis.xpending_range(stream, dispatch.WORKER_GROUP, min="-", max="+", count=100)
        owners = {p["consumer"] for p in pending} - {self.consumer}
        dead = {owner for owner in owners if not await self.redis.exists(dispatch.alive_key(owner))}
        orphans = [p["message_id"] for p in pending if p["consumer"] in dead]
        if not orphans:
            return
        # The idle floor makes a race between two live workers harmless: the first claim resets it.
        claimed = await self.redis.xclaim(
            stream, dispatch.WORKER_GROUP, self.consumer, min_idle_time=ORPHAN_MIN_IDLE_MS, message_ids=orphans
        )
        for entry_id, fields in claimed:
            if fields:
                log.warning("claiming reply %s from a dead worker", fields["message_id"])
                await self._admit(entry_id, int(fields["message_id"]))

    async def _requeue_lost(self) -> None:
        """A reply still pending in the database with no stream entry (Redis restarted, or was down
        when the reply was queued) is queued again. One worker at a time sweeps."""
        lock = await self.redis.set(
            dispatch.key(dispatch.SWEEP_LOCK), self.consumer, nx=True, px=int(RECOVER_TICK_S * 2000)
        )
        if not lock:
            return
        entries = await self.redis.xrange(dispatch.key(dispatch.GENERATE_STREAM))
        queued = {int(fields["message_id"]) for _, fields in entries if "message_id" in fields}
        lost = await sync_to_async(selectors.replies_unqueued)(
            queued=queued | set(self.replies), older_than_s=settings.INFERENCE_REQUEUE_AFTER_S
        )
        for message_id in lost:
            log.warning("reply %s was never queued (or its entry was lost): queueing it again", message_id)
            await self.redis.xadd(dispatch.key(dispatch.GENERATE_STREAM), {"message_id": str(message_id)})

    async def _admit(self, entry_id: str, message_id: int) -> None:
        try:
            prepared = await sync_to_async(prepare)(message_id, entry_id, self.engine)
        except Exception:
            log.exception("could not prepare reply %s", message_id)
            await self._fail_unprepared(entry_id, message_id)
            return
        if prepared is None:
            await self._ack(entry_id)
            return
        self.replies[message_id] = prepared.reply
        payload = await sync_to_async(selectors.message_payload_by_id)(message_id)
        await events.publish(prepared.reply.conversation_id, events.message_event(payload))
        self.waiting.append(prepared)
        self._submit_waiting()

    def _submit_waiting(self) -> None:
        while self.waiting:
            prepared = self.waiting[0]
            if prepared.request.adapter and prepared.request.adapter not in self.adapters:
                self.engine.load_adapter(prepared.request.adapter, prepared.adapter_path)
                self.adapters.add(prepared.request.adapter)
            try:
                self.engine.submit(prepared.request)
            except QueueFull:
                self._tell_busy()
                return
            self.waiting.popleft()

    def _tell_busy(self) -> None:
        """Customers whose reply cannot start yet hear why, once each; they start in arrival order."""
        for prepared in self.waiting:
            if not prepared.told_busy:
                prepared.told_busy = True
                asyncio.get_running_loop().create_task(events.publish(prepared.reply.conversation_id, BUSY_NOTICE))

    async def _fail_unprepared(self, entry_id: str, message_id: int) -> None:
        message = await sync_to_async(services.reply_finish)(
            message_id=message_id,
            text="",
            status=Message.Status.FAILED,
            token_count=0,
            error="could not build the prompt",
        )
        if message is not None:
            done = events.done_event(message.id, "", message.status, message.error)
            await events.publish(str(message.conversation_id), done)
        await self._ack(entry_id)

    async def _listen_cancel(self) -> None:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(dispatch.key(dispatch.CANCEL_CHANNEL))
        async for item in pubsub.listen():
            if item["type"] != "message":
                continue
            message_id = int(item["data"])
            waiting = next((p for p in self.waiting if p.reply.message_id == message_id), None)
            if waiting is not None:
                self.waiting.remove(waiting)
                waiting.reply.finish = TokenChunk(str(message_id), "", 0, "cancelled")
            elif message_id in self.replies:
                self.engine.cancel(str(message_id))

    async def _collect(self) -> None:
        """Fold the engine's chunks into each reply's text; publishing waits for the next flush."""
        while True:
            for chunk in await self.chunks.get():
                reply = self.replies.get(int(chunk.request_id))
                if reply is None:
                    continue
                if chunk.text and reply.first_token_at is None:
                    reply.first_token_at = timezone.now()
                reply.text += chunk.text
                reply.token_count = chunk.token_count
                if chunk.finished:
                    reply.finish = chunk
            self._submit_waiting()

    async def _flush(self) -> None:
        while True:
            await asyncio.sleep(self.flush_ms / 1000)
            try:
                await self._flush_once()
            except Exception:
                log.exception("flush failed; retrying at the next tick")

    async def _flush_once(self) -> None:
        """Save, then publish, each reply's new text: a delta never runs ahead of the database,
        so a browser that reloads between the two sees no gap between history and deltas."""
        snapshot = {r.message_id: (r.text, r.finish) for r in self.replies.values()}
        unsent = {
            r.message_id: (snapshot[r.message_id][0], r.token_count, r.first_token_at or timezone.now())
            for r in self.replies.values()
            if len(r.text) > r.sent and not r.silenced
        }
        if unsent:
            for message_id in await sync_to_async(services.reply_progress)(updates=unsent):
                self.replies[message_id].silenced = True  # a person holds it now, or it is gone
                self.engine.cancel(str(message_id))
        for message_id, (text, finish) in snapshot.items():
            reply = self.replies[message_id]
            try:
                if len(text) > reply.sent and not reply.silenced:
                    delta = events.delta_event(message_id, reply.sent, text[reply.sent :])
                    await events.publish(reply.conversation_id, delta)
                    reply.sent = len(text)
                if finish is not None:
                    await self._finish(reply, finish)
            except Exception:  # one reply's trouble must not stall the others
                log.exception("could not publish reply %s; dropping it", message_id)
                self.replies.pop(message_id, None)
                await self._ack(reply.entry_id)

    async def _finish(self, reply: Reply, chunk: TokenChunk) -> None:
        assert chunk.finish_reason is not None
        status = FINISH_STATUS[chunk.finish_reason]
        error = chunk.error or ("the reply took too long" if chunk.finish_reason == "timeout" else "")
        text = reply.text
        if reply.silenced:  # keep only what the customer saw before the conversation left the bot
            text, status = text[: reply.sent], Message.Status.CANCELLED
        stored = await sync_to_async(services.reply_finish)(
            message_id=reply.message_id,
            text=text,
            status=status,
            token_count=reply.token_count,
            first_token_at=reply.first_token_at,
            error=error,
        )
        if stored is not None:
            done = events.done_event(stored.id, stored.text, stored.status, stored.error)
            await events.publish(reply.conversation_id, done)
        del self.replies[reply.message_id]
        await self._ack(reply.entry_id)
        log.info("reply %s %s: %d tokens", reply.message_id, chunk.finish_reason, reply.token_count)

    async def _ack(self, entry_id: str) -> None:
        stream = dispatch.key(dispatch.GENERATE_STREAM)
        await self.redis.xack(stream, dispatch.WORKER_GROUP, entry_id)
        await self.redis.xdel(stream, entry_id)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY_S)
            await self._beat()

    async def _beat(self) -> None:
        """The shared heartbeat (a worker is up: the chat says so) and this consumer's own (it is alive:
        nobody takes its entries)."""
        status = {"consumer": self.consumer, "model": self.engine.model_name, "at": time.time()}
        status.update({k: v for k, v in self.engine.metrics().items() if isinstance(v, int | float)})
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(dispatch.key(dispatch.HEARTBEAT), json.dumps(status), ex=HEARTBEAT_TTL_S)
            pipe.set(dispatch.alive_key(self.consumer), status["at"], ex=HEARTBEAT_TTL_S)
            await pipe.execute()
