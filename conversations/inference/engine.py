"""The inference engine: one decode loop serves every live reply (continuous batching).

A step does three things, in this order:

1. drop what was cancelled or ran out of time (queued or running), freeing slots at once;
2. decode one token for every running reply, in one batched forward over the slot KV cache;
3. admit queued requests in arrival order while slots are free: prefill each one alone (exactly
   the computation ``generate`` does for it) and copy its cache into a slot; its first token comes
   out of that prefill, and it joins the batched decode at the next step.

Each reply has its own row of the KV cache with its own length; a decode step passes per-row
position ids and a mask over each row's own columns, so short and long prompts, young and old
replies, base-model rows and adapter rows all share one forward. Only the thread that calls
``step`` (or ``run``) touches the model; ``submit``, ``cancel`` and the adapter calls are safe from
any thread. See docs/engine.md for the design and its figures.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from .adapters import AdapterLoadError, AdapterSet
from .detokenize import IncrementalDecoder, StopMatcher
from .device import pick_device, pick_dtype
from .kv_cache import SlotCache
from .metrics import EngineMetrics
from .model_store import resolve_base_model
from .prefix_cache import Hit, PrefixCache
from .sampling import choose_tokens, make_generator
from .types import FinishReason, GenerationRequest, QueueFull, TokenChunk

log = logging.getLogger(__name__)

__all__ = ["AdapterLoadError", "Engine", "load_engine", "pick_device", "pick_dtype"]


@dataclass(eq=False)
class Reply:
    """A request's life inside the engine, from the queue to its last chunk."""

    request: GenerationRequest
    submitted_at: float
    decoder: IncrementalDecoder
    stops: StopMatcher
    max_new_tokens: int
    generator: torch.Generator | None = None
    adapter_key: str | None = None  # peft's name for the adapter version this reply started on
    cache_len: int = 0  # positions this reply holds in its KV row
    last_token: int = -1
    generated: list[int] = field(default_factory=list)  # every token so far, EOS included
    unsent_ids: list[int] = field(default_factory=list)  # generated since the last chunk
    first_token_at: float | None = None

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def tokens(self) -> int:
        return len(self.generated)

    def expired(self, now: float) -> bool:
        timeout = self.request.timeout_s
        return timeout is not None and now - self.submitted_at > timeout


@dataclass
class Finished:
    reply: Reply
    reason: FinishReason
    text: str = ""
    error: str | None = None


@dataclass
class StepResult:
    chunks: list[TokenChunk] = field(default_factory=list)
    tokens: int = 0


class Engine:
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        model_name: str,
        max_running: int = 32,
        max_queue: int = 256,
        adapters_dir: Path | None = None,
        max_prefill_tokens: int = 1024,
        prefix_cache_tokens: int = 4096,
        log_interval_s: float = 30.0,
    ) -> None:
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.max_running = max_running
        self.max_queue = max_queue
        self.adapters_dir = adapters_dir
        self.max_prefill_tokens = max_prefill_tokens  # prompt tokens admitted per step, so decodes keep pace
        self.log_interval_s = log_interval_s
        self.config = model.config
        self.device = next(model.parameters()).device
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = next(iter(sorted(self.eos_ids)), 0) if tokenizer.pad_token_id is None else tokenizer.pad_token_id
        self.max_positions = int(getattr(self.config, "max_position_embeddings", 1 << 30))

        self._adapters = AdapterSet(model, self.device)
        self._adapter_keys: dict[str, str] = {}  # public adapter name → peft key of its live version
        self._adapter_counter = itertools.count(1)
        self._cache = SlotCache(
            self.config.num_hidden_layers,
            self.config.num_key_value_heads,
            getattr(self.config, "head_dim", None) or self.config.hidden_size // self.config.num_attention_heads,
            next(model.parameters()).dtype,
            self.device,
        )
        # (slots, vocab) bool: tokens each reply has seen, for the repetition penalty.
        self._seen = torch.zeros(0, self.config.vocab_size, dtype=torch.bool, device=self.device)
        self._running: list[Reply] = []  # index = KV slot; kept dense
        self._prefix = PrefixCache(prefix_cache_tokens)  # keys and values of prompts seen, for reuse

        self._lock = threading.Lock()  # queue, ids, cancellations
        self._wake = threading.Condition(self._lock)
        self._queue: deque[Reply] = deque()
        self._live_ids: set[str] = set()
        self._cancelled: set[str] = set()

        self._model_lock = threading.Lock()  # the model and caches: one step or one adapter change
        self._ops = threading.Condition()
        self._ops_waiting = 0

        self.metrics_store = EngineMetrics()
        self._last_log = time.monotonic()

    def submit(self, req: GenerationRequest) -> None:
        """Queue a request (FIFO). Raises QueueFull at the bound, ValueError for a live duplicate id."""
        reply = Reply(
            request=req,
            submitted_at=time.monotonic(),
            decoder=IncrementalDecoder(self.tokenizer),
            stops=StopMatcher(req.sampling.stop),
            max_new_tokens=req.sampling.max_new_tokens,
        )
        with self._lock:
            if req.request_id in self._live_ids:
                raise ValueError(f"request {req.request_id!r} is already live")
            if len(self._queue) >= self.max_queue:
                self.metrics_store.record_reject()
                raise QueueFull(f"{len(self._queue)} requests are already waiting")
            self._queue.append(reply)
            self._live_ids.add(req.request_id)
            self.metrics_store.record_submit()
            self._wake.notify_all()

    def cancel(self, request_id: str) -> None:
        """The reply finishes as "cancelled" at the next step, keeping the text it already sent."""
        with self._lock:
            if request_id in self._live_ids:
                self._cancelled.add(request_id)
                self._wake.notify_all()

    def has_work(self) -> bool:
        with self._lock:
            return bool(self._running or self._queue)

    def step(self) -> list[TokenChunk]:
        with self._model_lock, torch.inference_mode():
            now = time.monotonic()
            result = StepResult()
            self._drop_cancelled_and_expired(now, result)
            if self._running:
                self._decode(result)
            self._admit(result)
            self._retire_unused_adapters()
            if not self._running and self._cache.capacity > 4096:
                self._cache.release()
        self.metrics_store.record_step(result.tokens)
        return result.chunks

    def run(self, emit: Callable[[list[TokenChunk]], None], stop: threading.Event) -> None:
        """Step while there is work; sleep on the queue when there is none; return once ``stop`` is set."""
        while not stop.is_set():
            self._let_adapter_changes_in()
            if not self.has_work():
                with self._lock:
                    if not self._queue:
                        self._wake.wait(timeout=0.2)  # woken by submit; the timeout notices ``stop``
                continue
            chunks = self.step()
            if chunks:
                emit(chunks)
            self._maybe_log_metrics()

    def metrics(self) -> dict[str, object]:
        with self._lock:
            queued, running = len(self._queue), len(self._running)
        snapshot = self.metrics_store.snapshot(queued=queued, running=running)
        snapshot["adapters"] = sorted(self._adapter_keys.copy())  # copy: atomic against a concurrent load
        return snapshot

    def configure_prefix_cache(self, tokens: int) -> None:
        """Empty the prefix cache and give it a new budget in tokens (0 turns prefix caching off)."""
        with self._model_lock:
            self._prefix = PrefixCache(tokens)

    def load_adapter(self, name: str, path: Path | str) -> None:
        """Load (or replace) a LoRA adapter; replies already running on an older version finish on it.

        Raises AdapterLoadError when the directory cannot be served; later requests naming the
        adapter then fail with that message, and nothing else is disturbed.
        """
        folder = Path(path)
        if not folder.is_absolute() and self.adapters_dir is not None:
            folder = self.adapters_dir / folder
        try:
            self._adapters.check(folder)  # disk reads and validation, outside the model lock
            with self._exclusive_model():
                key = f"adapter_{next(self._adapter_counter)}"
                self._adapters.install(key, folder)
                self._adapter_keys[name] = key
                self._retire_unused_adapters()
        except AdapterLoadError as exc:
            self._adapters.failures[name] = str(exc)
            log.warning("adapter %r failed to load: %s", name, exc)
            raise
        self._adapters.failures.pop(name, None)
        log.info("adapter %r loaded from %s", name, folder)

    def unload_adapter(self, name: str) -> None:
        """New requests for it fail from now on; replies running on it finish first, then it is freed."""
        with self._exclusive_model():
            self._adapter_keys.pop(name, None)
            self._adapters.failures.pop(name, None)
            self._retire_unused_adapters()

    def _drop_cancelled_and_expired(self, now: float, result: StepResult) -> None:
        with self._lock:
            cancelled, self._cancelled = self._cancelled, set()
            leaving = [(r, _why_leaving(r, cancelled, now)) for r in self._queue]
            for reply, reason in leaving:
                if reason is not None:
                    self._queue.remove(reply)
        for reply, reason in leaving:
            if reason is not None:
                self._close(Finished(reply, reason), result)
        slots = [(slot, r, _why_leaving(r, cancelled, now)) for slot, r in enumerate(self._running)]
        finished = [Finished(r, reason, self._final_text(r)) for _, r, reason in slots if reason is not None]
        self._free_slots([slot for slot, _, reason in slots if reason is not None])
        for item in finished:
            self._close(item, result)

    def _decode(self, result: StepResult) -> None:
        """One token for every running reply, in one forward."""
        n = len(self._running)
        lengths_list = [r.cache_len for r in self._running]
        read_len = max(lengths_list) + 1
        self._cache.ensure(n, read_len)
        # One host tensor, one copy to the device: (2, n) lengths (where each row writes) and tokens.
        step_inputs = torch.tensor([lengths_list, [r.last_token for r in self._running]]).to(self.device)
        lengths, input_ids = step_inputs[0], step_inputs[1].unsqueeze(1)  # (n,), (n, 1)
        self._cache.prepare_step(lengths, read_len)
        # (n, 1, 1, read_len): row i attends to its own columns 0..lengths[i], the new one included.
        columns = torch.arange(read_len, device=self.device)
        mask = (columns.unsqueeze(0) <= lengths.unsqueeze(1))[:, None, None, :]
        try:
            logits = self._forward(
                input_ids,
                [r.adapter_key for r in self._running],
                position_ids=lengths.unsqueeze(1),  # (n, 1): each row continues its own sequence
                attention_mask=mask,
                cache=self._cache,
            )  # (n, vocab)
            tokens = self._choose(logits, slice(0, n), self._running)
        except Exception as exc:  # a failed forward fails the batch, not the engine
            log.exception("decode step failed")
            self._fail_all_running(f"decode failed: {exc}", result)
            return
        token_ids = tokens.tolist()  # the step's one device → host sync
        finished: list[tuple[int, Finished]] = []
        for slot, (reply, token_id) in enumerate(zip(self._running, token_ids, strict=True)):
            reply.cache_len += 1
            done = self._accept(reply, token_id, result)
            if done is not None:
                finished.append((slot, done))
        self._retire(finished, result)

    def _retire(self, finished: list[tuple[int, Finished]], result: StepResult) -> None:
        """Free the slots of finished replies at once, then emit their last chunks."""
        for slot, done in finished:
            self._remember(slot, done.reply)  # the conversation's next prompt starts with this one's tokens
        self._free_slots([slot for slot, _ in finished])
        for _, done in finished:
            self._close(done, result)

    def _admit(self, result: StepResult) -> None:
        """Start queued requests, oldest first, while slots and this step's prompt budget last."""
        budget = self.max_prefill_tokens
        starting: list[Reply] = []
        while len(self._running) + len(starting) < self.max_running:
            with self._lock:
                if not self._queue:
                    break
                size = len(self._queue[0].request.prompt_ids)
                if starting and size > budget:
                    break
                reply = self._queue.popleft()
            refusal = self._refusal(reply)
            if refusal is not None:
                self._close(Finished(reply, "error", error=refusal), result)
                continue
            budget -= size
            starting.append(reply)
        if starting:
            self._prefill(starting, result)

    def _prefill(self, replies: list[Reply], result: StepResult) -> None:
        """Prefill the starting replies in one forward, copy their caches into new slots, take first tokens."""
        prompts = [tuple(r.request.prompt_ids) for r in replies]
        first_slot = len(self._running)
        slots = slice(first_slot, first_slot + len(replies))
        self._cache.ensure(slots.stop, max(map(len, prompts)) + 1)
        self._ensure_seen_rows(slots.stop)
        for slot, reply, prompt in zip(range(slots.start, slots.stop), replies, prompts, strict=True):
            reply.max_new_tokens = min(reply.max_new_tokens, self.max_positions - len(prompt))
            reply.adapter_key = self._adapter_keys.get(reply.request.adapter) if reply.request.adapter else None
            reply.generator = make_generator(reply.request.sampling, self.device)
            self._seen[slot].zero_()
            self._seen[slot, torch.tensor(prompt, device=self.device)] = True
        hits = [self._prefix.lookup(r.adapter_key, p) for r, p in zip(replies, prompts, strict=True)]
        try:
            logits, prefill_cache, columns = self._prefill_forward(prompts, [r.adapter_key for r in replies], hits)
            tokens = self._choose(logits, slots, replies)
            for offset, row_columns in enumerate(columns):
                self._cache.fill_slot(slots.start + offset, prefill_cache, offset, row_columns)
        except Exception as exc:  # a failed prefill fails these requests, not the engine
            log.exception("prefill failed")
            for reply in replies:
                self._close(Finished(reply, "error", error=f"prefill failed: {exc}"), result)
            return
        now = time.monotonic()
        finished: list[tuple[int, Finished]] = []
        for slot, reply, prompt, hit, token_id in zip(
            range(slots.start, slots.stop), replies, prompts, hits, tokens.tolist(), strict=True
        ):
            self._running.append(reply)
            reply.cache_len, reply.first_token_at = len(prompt), now
            self.metrics_store.record_first_token(now - reply.submitted_at, len(prompt), hit.length if hit else 0)
            self._remember(slot, reply)
            done = self._accept(reply, token_id, result)
            if done is not None:
                finished.append((slot, done))
        self._retire(finished, result)

    def _remember(self, slot: int, reply: Reply) -> None:
        """Offer the prefix cache the tokens whose keys and values ``slot`` holds: prompt, then reply."""
        prompt = tuple(reply.request.prompt_ids)
        tokens = prompt + tuple(reply.generated[: reply.cache_len - len(prompt)])
        self._prefix.store(reply.adapter_key, tokens, lambda: self._cache.slot_kv(slot, reply.cache_len))

    def _prefill_forward(
        self, prompts: list[tuple[int, ...]], adapter_keys: list[str | None], hits: list[Hit | None]
    ) -> tuple[torch.Tensor, DynamicCache, list[torch.Tensor]]:
        """Last-position logits (rows, vocab) for several prompts, the cache, and each row's columns in it.

        One prompt with nothing cached runs exactly as ``generate`` runs it (no mask, no padding).
        Otherwise the rows share one layout of ``P + S`` columns: each row's cached prefix (``p``
        tokens, from the prefix cache) ends at column ``P``, left-padded, and the part still to
        compute (``s`` tokens) ends at column ``P + S``, left-padded too. The forward computes the
        ``S`` suffix columns over a cache preloaded with the ``P`` prefix columns; each real token
        gets its true position and sees only its own row's real tokens before it. One forward for a
        burst of arrivals reads the weights once, and its matmuls are tall.
        """
        cache = DynamicCache(config=self.config)
        cached = [hit.length if hit else 0 for hit in hits]
        if len(prompts) == 1 and not cached[0]:
            input_ids = torch.tensor([prompts[0]], device=self.device)
            positions = torch.arange(len(prompts[0]), device=self.device)
            return self._forward(input_ids, adapter_keys, cache=cache), cache, [positions]
        suffixes = [prompt[length:] for prompt, length in zip(prompts, cached, strict=True)]
        width_p, width_s = max(cached), max(map(len, suffixes))  # P and S
        if width_p:
            self._preload(cache, hits, width_p)
        input_ids = torch.tensor([[self.pad_id] * (width_s - len(x)) + list(x) for x in suffixes], device=self.device)
        p = torch.tensor(cached, device=self.device).view(-1, 1, 1)  # (rows, 1, 1)
        pad = torch.tensor([width_s - len(x) for x in suffixes], device=self.device).view(-1, 1, 1)  # (rows, 1, 1)
        query = width_p + torch.arange(width_s, device=self.device).view(1, -1, 1)  # (1, S, 1): its column
        key = torch.arange(width_p + width_s, device=self.device).view(1, 1, -1)  # (1, 1, P + S)
        real_key = ((key >= width_p - p) & (key < width_p)) | (key >= width_p + pad)  # (rows, 1, P + S)
        # Causal over real keys; a padding query also sees itself, so no row of the softmax is all
        # masked (an all-masked row is NaN, and NaN leaks through zero weights).
        mask = ((key <= query) & real_key) | (key == query)  # (rows, S, P + S)
        position_ids = (p + query - width_p - pad).clamp(min=0).squeeze(2)  # (rows, S)
        logits = self._forward(
            input_ids, adapter_keys, position_ids=position_ids, attention_mask=mask.unsqueeze(1), cache=cache
        )
        end = width_p + width_s
        columns = [
            torch.cat((torch.arange(width_p - length, width_p), torch.arange(end - len(x), end))).to(self.device)
            for length, x in zip(cached, suffixes, strict=True)
        ]
        return logits, cache, columns

    def _preload(self, cache: DynamicCache, hits: list[Hit | None], width: int) -> None:
        """Fill ``cache`` with each row's cached prefix, right-aligned in ``width`` columns."""
        like = self._cache.slot_layers[0]
        shape = (len(self._cache.slot_layers), 2, len(hits), like.kv_heads, width, like.head_dim)
        prefix = torch.zeros(shape, dtype=like.dtype, device=self.device)
        for row, hit in enumerate(hits):
            if hit is not None:
                prefix[:, :, row, :, width - hit.length :] = hit.kv
        for layer in range(prefix.shape[0]):
            cache.update(prefix[layer, 0], prefix[layer, 1], layer)

    def _refusal(self, reply: Reply) -> str | None:
        """Why this request cannot start, or None."""
        req = reply.request
        if not req.prompt_ids:
            return "the prompt is empty"
        if len(req.prompt_ids) >= self.max_positions:
            return f"the prompt has {len(req.prompt_ids)} tokens; the model takes at most {self.max_positions - 1}"
        if req.sampling.max_new_tokens < 1:
            return "max_new_tokens must be at least 1"
        if req.adapter is not None and req.adapter not in self._adapter_keys:
            failure = self._adapters.failures.get(req.adapter)
            if failure:
                return f"adapter {req.adapter!r} failed to load: {failure}"
            return f"adapter {req.adapter!r} is not loaded"
        return None

    def _forward(self, input_ids: torch.Tensor, adapter_keys: list[str | None], **kwargs: Any) -> torch.Tensor:
        """Last-position logits, (batch, vocab), with each row routed to its adapter."""
        out = self._adapters.model(
            input_ids=input_ids,
            use_cache=True,
            logits_to_keep=1,
            **self._adapters.forward_kwargs(adapter_keys),
            **kwargs,
        )
        logits: torch.Tensor = out.logits  # (batch, 1, vocab): a module's forward is untyped
        return logits[:, -1]

    def _choose(self, logits: torch.Tensor, slots: slice, replies: list[Reply]) -> torch.Tensor:
        tokens = choose_tokens(
            logits, self._seen[slots], [r.request.sampling for r in replies], [r.generator for r in replies]
        )  # (rows,)
        rows = torch.arange(slots.start, slots.stop, device=self.device)
        self._seen[rows, tokens] = True
        return tokens

    def _accept(self, reply: Reply, token_id: int, result: StepResult) -> Finished | None:
        """Take one new token: emit the text it completes, or say why the reply is finished."""
        reply.last_token = token_id
        reply.generated.append(token_id)
        reply.unsent_ids.append(token_id)
        result.tokens += 1
        if token_id in self.eos_ids and not reply.request.sampling.ignore_eos:
            return Finished(reply, "stop", self._final_text(reply))
        released, hit_stop = reply.stops.push(reply.decoder.push(token_id))
        if hit_stop:
            return Finished(reply, "stop", released)
        if reply.tokens >= reply.max_new_tokens:
            return Finished(reply, "length", released + self._final_text(reply))
        if released:
            result.chunks.append(TokenChunk(reply.request_id, released, reply.tokens, token_ids=self._take_ids(reply)))
        return None

    def _take_ids(self, reply: Reply) -> tuple[int, ...]:
        ids, reply.unsent_ids = tuple(reply.unsent_ids), []
        return ids

    def _final_text(self, reply: Reply) -> str:
        """Everything still held back, at the end of a reply that did not end on a stop string."""
        released, hit_stop = reply.stops.push(reply.decoder.flush())
        return released if hit_stop else released + reply.stops.flush()

    def _close(self, done: Finished, result: StepResult) -> None:
        reply = done.reply
        chunk = TokenChunk(reply.request_id, done.text, reply.tokens, done.reason, done.error, self._take_ids(reply))
        result.chunks.append(chunk)
        decode_s = time.monotonic() - reply.first_token_at if reply.first_token_at is not None else 0.0
        self.metrics_store.record_finish(done.reason, reply.tokens, decode_s)
        with self._lock:
            self._live_ids.discard(reply.request_id)
            self._cancelled.discard(reply.request_id)

    def _free_slots(self, slots: list[int]) -> None:
        """Remove replies from the running set; the last row moves into each hole (one row copy)."""
        for slot in sorted(slots, reverse=True):
            last = len(self._running) - 1
            if slot != last:
                moved = self._running[last]
                self._cache.move_slot(last, slot, moved.cache_len)
                self._seen[slot] = self._seen[last]
                self._running[slot] = moved
            self._running.pop()

    def _fail_all_running(self, error: str, result: StepResult) -> None:
        failed = [Finished(r, "error", error=error) for r in self._running]
        self._free_slots(list(range(len(self._running))))
        for item in failed:
            self._close(item, result)

    def _ensure_seen_rows(self, rows: int) -> None:
        if rows > self._seen.shape[0]:
            grown = torch.zeros(
                max(rows, 2 * self._seen.shape[0], 4), self._seen.shape[1], dtype=torch.bool, device=self.device
            )
            grown[: self._seen.shape[0]] = self._seen
            self._seen = grown

    def _retire_unused_adapters(self) -> None:
        """Free adapter versions that no public name points to and no running reply still uses."""
        wanted = set(self._adapter_keys.values()) | {r.adapter_key for r in self._running}
        for key in self._adapters.names - wanted:
            self._adapters.remove(key)
            self._prefix.drop_adapter(key)

    @contextmanager
    def _exclusive_model(self) -> Iterator[None]:
        """Hold the model between two steps; ``run`` lets us in before its next step."""
        with self._ops:
            self._ops_waiting += 1
        try:
            with self._model_lock:
                yield
        finally:
            with self._ops:
                self._ops_waiting -= 1
                self._ops.notify_all()

    def _let_adapter_changes_in(self) -> None:
        with self._ops:
            while self._ops_waiting:
                self._ops.wait()

    def _maybe_log_metrics(self) -> None:
        now = time.monotonic()
        if now - self._last_log >= self.log_interval_s:
            self._last_log = now
            log.info("engine metrics %s", self.metrics())


def _why_leaving(reply: Reply, cancelled: set[str], now: float) -> FinishReason | None:
    if reply.request_id in cancelled:
        return "cancelled"
    return "timeout" if reply.expired(now) else None


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    ids: set[int] = set()
    generation_config = getattr(model, "generation_config", None)
    for source in (getattr(generation_config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(i) for i in source)
    return frozenset(ids)


def default_cache_dir() -> Path:
    root = Path(__file__).resolve().parents[2]
    return Path(os.environ.get("MODEL_CACHE_DIR", str(root / ".cache" / "models")))


def load_engine(
    base_model: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    threads: int | None = None,
    max_running: int = 32,
    max_queue: int = 256,
    adapters_dir: Path | None = None,
    cache_dir: Path | None = None,
    prefix_cache_tokens: int = 4096,
) -> Engine:
    """Load the base model (the packaged SmolLM2 when ``base_model`` is empty) and wrap it in an Engine."""
    if threads:
        torch.set_num_threads(threads)
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    folder = resolve_base_model(base_model, cache_dir or default_cache_dir())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, attn_implementation="sdpa")
    # transformers wraps PreTrainedModel.to with functools.wraps, which mypy reads as an unbound function.
    model = model.to(torch_device).eval()  # type: ignore[arg-type]
    log.info("engine: %s on %s (%s), %d torch threads", folder, torch_device, torch_dtype, torch.get_num_threads())
    return Engine(
        model,
        tokenizer,
        model_name=Path(str(folder).rstrip("/")).name,
        max_running=max_running,
        max_queue=max_queue,
        adapters_dir=adapters_dir,
        prefix_cache_tokens=prefix_cache_tokens,
    )
