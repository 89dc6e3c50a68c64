"""The inference worker: claims reply requests from Redis, feeds the engine, streams text back.

Two threads. The engine thread owns the model and runs its decode loop (``engine.run``); this
module's asyncio loop does all I/O in six loops: read the request stream, recover what dead
workers and Redis lost, listen for stops, collect the engine's chunks, flush (save, then publish)
every ``flush_ms``, and beat the heartbeat. Adapter loads run in a thread of their own.

Each loop is supervised: an error is logged and the loop goes on after a capped exponential
backoff. A loop failing (or stuck) for longer than ``INFERENCE_LOOP_FAIL_LIMIT_S`` ends the
worker with exit status 1, and the heartbeat only beats while every loop is going round: a worker
is never online and deaf.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import redis
import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from .. import dispatch, selectors
from ..inference.types import Engine, QueueFull, TokenChunk
from . import replies
from .replies import DATABASE_DOWN, Prepared, Reply, ReplyRefused

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 3
RECOVER_TICK_S = 5
RECOVER_SWEEP_EVERY = 6  # ticks: the database sweep for lost requests runs every 30 s
ORPHAN_MIN_IDLE_MS = 1000
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0

BUSY_NOTICE = {
    "type": "notice",
    "code": "busy",
    "detail": "Many customers are chatting right now: your answer will start in a moment.",
}


QUEUE_FULL_ERROR = "The assistant is too busy to answer right now. Please try again in a moment."
QUEUE_FULL_NOTICE = {
    "type": "notice",
    "code": "queue_full",
    "detail": "The assistant is too busy to answer right now: press Retry in a moment.",
}


class ConsumerNameTaken(Exception):
    """Another live worker already reads the stream under this consumer name."""


def default_consumer() -> str:
    """Unique per process: the host (a compose replica's container) and the process id."""
    return f"worker-{socket.gethostname()}-{os.getpid()}"


@dataclass
class LoopHealth:
    """When a loop last went round, and since when it has been failing without a success."""

    pause_s: float
    stamp: float = field(default_factory=time.monotonic)
    failing_since: float | None = None

    def trouble(self, now: float, limit_s: float) -> str:
        """Why this loop cannot be trusted any more, or "" while it can."""
        if self.failing_since is not None and now - self.failing_since > limit_s:
            return f"failing for {now - self.failing_since:.0f} s"
        if now - self.stamp > limit_s + self.pause_s:
            return f"stuck for {now - self.stamp:.0f} s"
        return ""


@dataclass
class InferenceWorker:
    engine: Engine
    consumer: str = field(default_factory=default_consumer)
    flush_ms: int = 80
    stop_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.redis = aioredis.Redis.from_url(
            settings.REDIS_URL,
            decode_responses=True,
            socket_timeout=None,  # pub/sub and XREADGROUP block on purpose
            socket_connect_timeout=5,
        )
        self.replies: dict[int, Reply] = {}
        self.waiting: deque[Prepared] = deque()  # the engine's queue was full: retried in order
        self.unprepared: deque[tuple[str, int | None]] = deque()  # the database was down: retried
        self.unacked: set[str] = set()  # entries answered while Redis was down: acked when it is back
        self.adapters: set[str] = set()
        self.loading: dict[str, asyncio.Task[None]] = {}
        self.chunks: asyncio.Queue[list[TokenChunk]] = asyncio.Queue()
        self.health: dict[str, LoopHealth] = {}
        self.exit_status = 0
        self.cursor = "0"  # an id: walk this consumer's pending entries; ">" afterwards: new entries
        self.pubsub: aioredis.client.PubSub | None = None
        self.recover_ticks = 0

    async def run(self) -> None:
        """Serve until ``stop_event`` is set, or until a loop cannot recover (``exit_status`` 1)."""
        if await dispatch.consumer_taken(self.redis, self.consumer, beat_every_s=HEARTBEAT_EVERY_S):
            await self.redis.aclose()
            raise ConsumerNameTaken(f"another live inference worker is named {self.consumer!r}")
        loop = asyncio.get_running_loop()
        await dispatch.group_ensure(self.redis)
        engine_thread = threading.Thread(
            target=self.engine.run,
            args=(lambda chunks: loop.call_soon_threadsafe(self.chunks.put_nowait, chunks), self.stop_event),
            name="engine",
            daemon=True,
        )
        engine_thread.start()
        await self._beat()  # alive before reading, so no other worker takes this one's entries
        loops: dict[str, tuple[Callable[[], Awaitable[None]], Callable[[], float]]] = {
            "read": (self._read_once, lambda: 0.0),
            "recover": (self._recover_once, lambda: RECOVER_TICK_S),
            "cancel": (self._cancel_once, lambda: 0.0),
            "collect": (self._collect_once, lambda: 0.0),
            "flush": (self._flush_once, lambda: self.flush_ms / 1000),
            "heartbeat": (self._heartbeat_once, lambda: HEARTBEAT_EVERY_S),
        }
        tasks = [asyncio.create_task(self._supervise(name, *spec), name=name) for name, spec in loops.items()]
        log.info("inference worker %s serving %s", self.consumer, self.engine.model_name)
        try:
            await asyncio.to_thread(self.stop_event.wait)
        finally:
            for task in [*tasks, *self.loading.values()]:
                task.cancel()
            await asyncio.gather(*tasks, *self.loading.values(), return_exceptions=True)
            await asyncio.to_thread(engine_thread.join, 10)  # its last step still emits into this loop
            await self._close()

    async def _close(self) -> None:
        try:
            await dispatch.heartbeat_clear(self.redis, consumer=self.consumer)
        except redis.RedisError as error:  # it expires on its own
            log.warning("could not remove the heartbeat: %s", error)
        if self.pubsub is not None:
            await self.pubsub.aclose()
        await self.redis.aclose()

    def _fatal(self, why: str) -> None:
        log.critical("inference worker %s stops: %s", self.consumer, why)
        self.exit_status = 1
        self.stop_event.set()

    async def _supervise(self, name: str, step: Callable[[], Awaitable[None]], pause: Callable[[], float]) -> None:
        """Run ``step`` for ever; an error is logged, backed off (exponential, capped) and retried."""
        health = self.health[name] = LoopHealth(pause())
        failures = 0
        while not self.stop_event.is_set():
            try:
                await step()
            except Exception:
                now = time.monotonic()
                health.stamp = now
                health.failing_since = health.failing_since or now
                failures += 1
                log.exception("the %s loop failed (%d in a row); retrying", name, failures)
                trouble = health.trouble(now, settings.INFERENCE_LOOP_FAIL_LIMIT_S)
                if trouble:
                    self._fatal(f"the {name} loop has been {trouble}")
                    return
                await asyncio.sleep(min(BACKOFF_FIRST_S * 2 ** (failures - 1), BACKOFF_MAX_S))
                continue
            health.stamp, health.failing_since, failures = time.monotonic(), None, 0
            health.pause_s = pause()
            if health.pause_s:
                await asyncio.sleep(health.pause_s)

    def _troubles(self) -> list[str]:
        now = time.monotonic()
        limit = settings.INFERENCE_LOOP_FAIL_LIMIT_S
        return [f"the {name} loop has been {why}" for name, h in self.health.items() if (why := h.trouble(now, limit))]

    async def _read_once(self) -> None:
        """First this consumer's own unacknowledged entries (a previous life died mid-reply), then
        new ones. Entries whose preparation met a database outage are retried first, in order."""
        if not self.unprepared:
            entries = await dispatch.entries_read(self.redis, consumer=self.consumer, cursor=self.cursor)
            if self.cursor != ">":
                self.cursor = entries[-1][0] if entries else ">"
            self.unprepared.extend(entries)
        while self.unprepared:
            entry_id, message_id = self.unprepared[0]
            await self._admit(entry_id, message_id)
            self.unprepared.popleft()

    async def _recover_once(self) -> None:
        """Take over what a dead worker left behind, and queue again what never reached the stream."""
        ticks, self.recover_ticks = self.recover_ticks, self.recover_ticks + 1
        await self._claim_orphans()
        if ticks % RECOVER_SWEEP_EVERY == 0:
            await self._requeue_lost()
        await self._unload_retired()

    async def _unload_retired(self) -> None:
        """Unload the adapters of versions that no longer serve (a promote or a rollback retired
        them) once no reply of this worker still runs on them: a vLLM server holds only a few
        LoRA slots (``--max-loras``), and the built-in engine frees the memory. A reply that still
        asks for one later (queued before the promote) loads it again."""
        if not self.adapters:
            return
        from finetuning.selectors import version_active

        active = await database_sync_to_async(version_active)()
        keep = {active.name} if active is not None else set()
        keep |= {p.request.adapter for p in self.waiting if p.request.adapter}
        keep |= {r.adapter for r in self.replies.values() if r.adapter}
        for name in sorted(self.adapters - keep - set(self.loading)):
            try:
                await asyncio.to_thread(self.engine.unload_adapter, name)
            except Exception as error:  # tried again next tick; serving goes on meanwhile
                log.warning("could not unload retired adapter %s: %s", name, error)
                continue
            self.adapters.discard(name)
            log.info("unloaded adapter %s: its version no longer serves", name)

    async def _claim_orphans(self) -> None:
        """Entries delivered to a consumer whose heartbeat has expired (killed, or gone for good under
        another name) are claimed by this one and answered: ``reply_claim`` restarts a half-written reply."""
        pending = await dispatch.entries_pending(self.redis)
        owners = {consumer for _, consumer in pending} - {self.consumer}
        dead = {owner for owner in owners if not await dispatch.consumer_alive(self.redis, owner)}
        orphans = [entry_id for entry_id, consumer in pending if consumer in dead]
        if not orphans:
            return
        claimed = await dispatch.entries_claim(
            self.redis, consumer=self.consumer, entry_ids=orphans, min_idle_ms=ORPHAN_MIN_IDLE_MS
        )
        for entry_id, message_id in claimed:
            log.warning("claiming reply %s from a dead worker", message_id)
            self.unprepared.append((entry_id, message_id))  # the read loop prepares it, in order

    async def _requeue_lost(self) -> None:
        """A reply still active in the database with no stream entry (Redis restarted, or was down
        when the reply was queued) is queued again, unless a live worker is writing it."""
        if not await dispatch.sweep_lock(self.redis, consumer=self.consumer, hold_ms=int(RECOVER_TICK_S * 2000)):
            return
        known = await dispatch.queued_message_ids(self.redis)
        known |= set(self.replies) | {message_id for _, message_id in self.unprepared if message_id is not None}
        lost = await database_sync_to_async(selectors.replies_unqueued)(
            queued=known, older_than_s=settings.INFERENCE_REQUEUE_AFTER_S
        )
        for message_id, owner in lost:
            if owner and owner != self.consumer and await dispatch.consumer_alive(self.redis, owner):
                continue  # its worker still writes it, even though Redis lost the entry
            log.warning("reply %s was never queued (or its entry was lost): queueing it again", message_id)
            await dispatch.entry_add(self.redis, message_id=message_id)

    async def _admit(self, entry_id: str, message_id: int | None) -> None:
        """Prepare a reply and hand it to the engine. A database outage raises (it is retried);
        any other reason the reply cannot be prepared fails that reply alone."""
        if message_id is None:
            await self._ack(entry_id)
            return
        if message_id in self.replies:  # queued again while this worker writes it: keep writing
            await self._ack(entry_id)
            return
        if len(self.waiting) >= settings.INFERENCE_MAX_WAITING:
            await self._refuse_busy(entry_id, message_id)
            return
        try:
            prepared = await replies.reply_prepare(
                message_id=message_id, entry_id=entry_id, engine=self.engine, consumer=self.consumer
            )
        except DATABASE_DOWN as error:
            log.warning("the database is unavailable preparing reply %s (%s); retrying", message_id, error)
            raise
        except ReplyRefused as refused:
            await replies.fail(message_id=message_id, error=str(refused))
            await self._ack(entry_id)
            return
        except Exception:
            log.exception("could not prepare reply %s", message_id)
            await replies.fail(message_id=message_id, error="could not build the prompt")
            await self._ack(entry_id)
            return
        if prepared is None:
            await self._ack(entry_id)
            return
        log.info("reply %s claimed by %s", message_id, self.consumer)
        self.replies[message_id] = prepared.reply
        try:
            await replies.announce_claimed(prepared.reply, prepared.announced)
        except Exception as error:  # cosmetic: the deltas and the done frame still come
            log.warning("could not announce reply %s: %s", message_id, error)
        self.waiting.append(prepared)
        self._submit_waiting()

    async def _refuse_busy(self, entry_id: str, message_id: int) -> None:
        """Past ``INFERENCE_MAX_WAITING`` a reply fails at once, before it is claimed, rather than
        queue without end: the customer hears why and may retry."""
        log.warning("reply %s refused: %d replies already wait for the engine", message_id, len(self.waiting))
        await replies.fail(message_id=message_id, error=QUEUE_FULL_ERROR, notice=QUEUE_FULL_NOTICE)
        await self._ack(entry_id)

    def _submit_waiting(self) -> None:
        """Hand waiting requests to the engine in order; one whose adapter is loading waits for it
        (in a thread) without holding up the others."""
        for prepared in list(self.waiting):
            adapter = prepared.request.adapter
            if adapter and adapter not in self.adapters:
                if adapter not in self.loading:
                    self.loading[adapter] = asyncio.create_task(self._adapter_load(adapter, prepared.adapter_path))
                continue
            try:
                self.engine.submit(prepared.request)
            except QueueFull:
                self._tell_busy()
                return
            self.waiting.remove(prepared)

    async def _adapter_load(self, name: str, path: str) -> None:
        """Load off the event loop; an adapter that will not load fails only the replies asking for it."""
        try:
            await asyncio.to_thread(self.engine.load_adapter, name, path)
        except Exception as error:
            log.warning("adapter %s will not load: %s", name, error)
            for prepared in [p for p in self.waiting if p.request.adapter == name]:
                self.waiting.remove(prepared)
                message_id = prepared.reply.message_id
                prepared.reply.finish = TokenChunk(str(message_id), "", 0, "error", replies.unservable_error(name))
            await self._mark_unservable(name, str(error))
        else:
            self.adapters.add(name)
        finally:
            self.loading.pop(name, None)
        self._submit_waiting()

    async def _mark_unservable(self, name: str, error: str) -> None:
        from finetuning.services import version_mark_unservable

        try:
            await database_sync_to_async(version_mark_unservable)(name=name, error=error)
        except DATABASE_DOWN as down:  # the next reply asking for it tries the load again
            log.warning("could not mark version %s unservable: %s", name, down)

    def _tell_busy(self) -> None:
        """Customers whose reply cannot start yet hear why, once each; they start in arrival order."""
        for prepared in self.waiting:
            if not prepared.told_busy:
                prepared.told_busy = True
                asyncio.get_running_loop().create_task(replies.tell(prepared.reply, BUSY_NOTICE))

    async def _cancel_once(self) -> None:
        """Wait up to a second for a stop; a broken subscription (Redis restarted) is made again."""
        if self.pubsub is None:
            self.pubsub = self.redis.pubsub()
            await self.pubsub.subscribe(dispatch.key(dispatch.CANCEL_CHANNEL))
        try:
            item = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        except Exception:
            pubsub, self.pubsub = self.pubsub, None
            await pubsub.aclose()
            raise
        if item is None or item["type"] != "message":
            return
        message_id = int(item["data"])
        waiting = next((p for p in self.waiting if p.reply.message_id == message_id), None)
        if waiting is not None:
            self.waiting.remove(waiting)
            waiting.reply.finish = TokenChunk(str(message_id), "", 0, "cancelled")
        elif message_id in self.replies:
            self.engine.cancel(str(message_id))

    async def _collect_once(self) -> None:
        """Fold the engine's chunks into each reply's text; publishing waits for the next flush."""
        try:
            batch = await asyncio.wait_for(self.chunks.get(), 1.0)
        except TimeoutError:
            return
        for chunk in batch:
            reply = self.replies.get(int(chunk.request_id))
            if reply is None or reply.stored:
                continue
            if chunk.text and reply.first_token_at is None:
                reply.first_token_at = timezone.now()
            reply.text += chunk.text
            reply.token_count = chunk.token_count
            if chunk.finished:
                reply.finish = chunk
        self._submit_waiting()

    async def _flush_once(self) -> None:
        """Save, then publish, each reply's new text: a delta never runs ahead of the database,
        so a browser that reloads between the two sees no gap between history and deltas. A
        finished reply is saved, its done frame published, then its entry acknowledged; whatever
        Redis refuses is tried again at the next flush."""
        snapshot = {r.message_id: (r.text, r.finish) for r in self.replies.values()}
        for message_id in await replies.progress_save(self.replies):
            self.replies[message_id].silenced = True  # a person holds it now, or it is gone
            self.engine.cancel(str(message_id))
        for message_id, (text, finish) in snapshot.items():
            reply = self.replies[message_id]
            await replies.deltas_publish(reply, text)
            if finish is not None and not reply.stored:
                await replies.finish_save(reply)
            if reply.stored and await replies.done_publish(reply):
                del self.replies[message_id]
                await self._ack(reply.entry_id)
        for entry_id in list(self.unacked):
            self.unacked.discard(entry_id)
            await self._ack(entry_id)

    async def _ack(self, entry_id: str) -> None:
        try:
            await dispatch.entry_ack(self.redis, entry_id=entry_id)
        except redis.RedisError as error:
            log.warning("could not acknowledge %s (%s); retrying at the next flush", entry_id, error)
            self.unacked.add(entry_id)

    async def _heartbeat_once(self) -> None:
        troubles = self._troubles()
        if troubles:
            self._fatal("; ".join(troubles))
            return
        await self._beat()

    async def _beat(self) -> None:
        """The shared heartbeat (a worker is up: the chat says so) and this consumer's own (it is alive:
        nobody takes its entries)."""
        status: dict[str, object] = {"consumer": self.consumer, "model": self.engine.model_name, "at": time.time()}
        status.update({k: v for k, v in self.engine.metrics().items() if isinstance(v, int | float)})
        await dispatch.heartbeat_send(self.redis, consumer=self.consumer, status=status)
