"""The vLLM backend: the ``Engine`` protocol served by a vLLM server's OpenAI-compatible API.

The worker keeps everything it does with the built-in engine (the stream, claims, prompts built
with the chat template, progress saves, stop, recovery); only generation moves to the server. Each
request is one streamed ``POST /v1/completions`` whose prompt is the worker's token ids, so the
prompt the model sees is exactly the one the built-in engine would see.

``run`` owns an asyncio loop with one ``httpx.AsyncClient``; ``submit`` and ``cancel`` hand work
to it from any thread. The streams' chunks are gathered and emitted once per ``tick_s``, like an
engine step, so the worker folds a batch at a time rather than one token per wake-up. ``cancel``
closes the request's stream: vLLM aborts a request whose client has gone, so Stop also stops the
server generating (tests/inference/test_vllm_server.py proves it on the real server).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from .metrics import EngineMetrics
from .types import Emit, FinishReason, GenerationRequest, QueueFull, TokenChunk, Tokenizer

log = logging.getLogger(__name__)

# vLLM's finish reasons and ours. "abort" is a request the server dropped (it was shutting down,
# or another client aborted it): the reply did not end on its own, so it is an error, not a stop.
FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length"}


class VllmError(RuntimeError):
    """The vLLM server refused or failed; the message says what it said."""


def server_message(response: httpx.Response) -> str:
    """The error text vLLM sends (``{"error": {"message": ...}}`` or ``{"message": ...}``), else the body."""
    body = response.text.strip()
    try:
        data = json.loads(body)
    except ValueError:
        return body[:500] or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
        if isinstance(error, str):
            return error[:500]
        if data.get("message"):
            return str(data["message"])[:500]
    return body[:500]


def completion_body(request: GenerationRequest, model: str) -> dict[str, Any]:
    """The ``/v1/completions`` body for one request: its prompt ids and its sampling settings."""
    sampling = request.sampling
    body: dict[str, Any] = {
        "model": request.adapter or model,
        "prompt": list(request.prompt_ids),
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        "max_tokens": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p if sampling.temperature > 0 else 1.0,
        "top_k": sampling.top_k if sampling.top_k > 0 else -1,  # vLLM's "off"
        "repetition_penalty": sampling.repetition_penalty,
        "ignore_eos": sampling.ignore_eos,
    }
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    return body


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The ``data:`` payloads of a server-sent event stream, one per event (multi-line joined)."""
    parts: list[str] = []
    async for line in lines:
        if not line:
            if parts:
                yield "\n".join(parts)
                parts = []
            continue
        if line.startswith(":"):
            continue  # a comment: keep-alive
        field, _, value = line.partition(":")
        if field == "data":
            parts.append(value.removeprefix(" "))
    if parts:
        yield "\n".join(parts)


class _Stream:
    """One request in flight: its task, what it produced, and why it was ended from outside."""

    def __init__(self, request: GenerationRequest) -> None:
        self.request = request
        self.produced = 0
        self.started = time.monotonic()
        self.first_token_at: float | None = None
        self.task: asyncio.Task[None] | None = None
        self.cancelled = False


class VllmEngine:
    """A client of one vLLM server, as an ``Engine``. Several workers may share a server."""

    def __init__(
        self,
        url: str,
        *,
        model: str = "",
        tokenizer: Tokenizer | None = None,
        tokenizer_path: str = "",
        adapters_dir: Path | None = None,
        server_adapters_dir: str = "",
        tick_s: float = 0.02,
        max_running: int = 256,
        connect_timeout_s: float = 10.0,
    ) -> None:
        """``model``: the served model's id (default: the only one ``/v1/models`` lists).
        ``tokenizer``/``tokenizer_path``: the base model's tokenizer, loaded here (no weights).
        ``adapters_dir``: where relative adapter paths lie; ``server_adapters_dir``: the same folder
        as the server sees it, when it runs elsewhere (a container with the folder mounted)."""
        self.url = url.rstrip("/")
        self.tick_s = tick_s
        self.max_running = max_running
        self.adapters_dir = adapters_dir
        self.server_adapters_dir = server_adapters_dir
        self.timeout = httpx.Timeout(connect_timeout_s, read=None, write=30.0, pool=None)
        self.served_model, self.max_positions = self._discover(model)
        # What a reply names: the folder's name for a local path ("SmolLM2-135M-Instruct"), as the
        # built-in engine names it; the id itself for a hub name.
        self.model_name = Path(self.served_model.rstrip("/")).name if "/" in self.served_model else self.served_model
        self._tokenizer = tokenizer
        self._tokenizer_path = tokenizer_path or self.served_model
        self.metrics_store = EngineMetrics()
        self._lock = threading.Lock()
        self._pending: list[GenerationRequest] = []  # submitted before the loop runs, or between ticks
        self._cancels: set[str] = set()
        self._streams: dict[str, _Stream] = {}
        self._out: list[TokenChunk] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._adapter_paths: dict[str, str] = {}

    # -- discovery and the tokenizer ------------------------------------------------------------

    def _discover(self, wanted: str) -> tuple[str, int]:
        """The model to ask for and its context length, from ``/v1/models``."""
        try:
            response = httpx.get(f"{self.url}/v1/models", timeout=self.timeout)
        except httpx.HTTPError as error:
            raise VllmError(f"vLLM at {self.url} does not answer: {error}") from error
        if response.status_code != 200:
            raise VllmError(
                f"vLLM at {self.url} refused /v1/models ({response.status_code}): {server_message(response)}"
            )
        models = [m for m in response.json().get("data", []) if not m.get("parent")]  # adapters name a parent
        ids = [str(m["id"]) for m in models]
        if wanted:
            chosen = next((m for m in models if m["id"] == wanted), None)
            if chosen is None:
                raise VllmError(f"vLLM at {self.url} serves {ids}, not VLLM_MODEL={wanted!r}")
        elif len(models) == 1:
            chosen = models[0]
        else:
            raise VllmError(f"vLLM at {self.url} serves {ids}: set VLLM_MODEL to the one to use")
        return str(chosen["id"]), int(chosen.get("max_model_len") or 2048)

    @property
    def tokenizer(self) -> Tokenizer:
        """The base model's tokenizer, loaded locally on first use: the worker builds the prompt."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer_path)
        return self._tokenizer

    # -- the Engine protocol, from any thread ---------------------------------------------------

    def submit(self, request: GenerationRequest) -> None:
        with self._lock:
            if len(self._streams) + len(self._pending) >= self.max_running:
                self.metrics_store.record_reject()
                raise QueueFull(f"{self.max_running} requests are already streaming from vLLM")
            self._pending.append(request)
        self.metrics_store.record_submit()
        self._poke()

    def cancel(self, request_id: str) -> None:
        with self._lock:
            self._cancels.add(request_id)
        self._poke()

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop closed: the engine is stopping
                pass

    def run(self, emit: Emit, stop: threading.Event) -> None:
        asyncio.run(self._serve(emit, stop))

    def metrics(self) -> Mapping[str, object]:
        with self._lock:
            queued, running = len(self._pending), len(self._streams)
        snapshot = self.metrics_store.snapshot(queued=queued, running=running)
        snapshot["backend"] = "vllm"
        snapshot["vllm_url"] = self.url
        snapshot["adapters"] = sorted(self._adapter_paths)
        return snapshot

    # -- the loop ---------------------------------------------------------------------------------

    async def _serve(self, emit: Emit, stop: threading.Event) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(base_url=self.url, timeout=self.timeout) as client:
            self._client = client
            try:
                while not stop.is_set():
                    self._take_work()
                    self._flush(emit)
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.tick_s if self._streams else 0.1)
                    except TimeoutError:
                        pass
                    self._wake.clear()
            finally:
                self._loop = None
                streams = [s for s in self._streams.values() if s.task is not None]
                for stream in streams:
                    stream.cancelled = True
                    assert stream.task is not None
                    stream.task.cancel()
                await asyncio.gather(*(s.task for s in streams if s.task), return_exceptions=True)
                self._flush(emit)

    def _take_work(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            cancels, self._cancels = self._cancels, set()
        for request in pending:
            if request.request_id in cancels:  # stopped before it started
                cancels.discard(request.request_id)
                self._push(TokenChunk(request.request_id, "", 0, "cancelled"))
                continue
            stream = _Stream(request)
            self._streams[request.request_id] = stream
            stream.task = asyncio.create_task(self._run_stream(stream), name=f"vllm-{request.request_id}")
        for request_id in cancels:
            running = self._streams.get(request_id)
            if running is not None and running.task is not None and not running.cancelled:
                running.cancelled = True
                running.task.cancel()  # leaves the `async with` of the stream: the connection closes

    def _flush(self, emit: Emit) -> None:
        if not self._out:
            return
        batch, self._out = self._out, []
        self.metrics_store.record_step(sum(1 for c in batch if c.text or c.token_ids))
        emit(batch)

    def _push(self, chunk: TokenChunk) -> None:
        self._out.append(chunk)
        if chunk.finished:
            stream = self._streams.pop(chunk.request_id, None)
            if stream is not None:
                decode_s = time.monotonic() - (stream.first_token_at or stream.started)
                self.metrics_store.record_finish(chunk.finish_reason or "error", stream.produced, decode_s)
            self._wake_soon()

    def _wake_soon(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- one request ------------------------------------------------------------------------------

    async def _run_stream(self, stream: _Stream) -> None:
        request_id = stream.request.request_id
        try:
            async with asyncio.timeout(stream.request.timeout_s):
                await self._generate(stream)
        except asyncio.CancelledError:
            if not stream.cancelled:
                raise
            self._push(TokenChunk(request_id, "", stream.produced, "cancelled"))
        except TimeoutError:
            self._push(TokenChunk(request_id, "", stream.produced, "timeout"))
        except VllmError as error:
            log.warning("vLLM failed reply %s: %s", request_id, error)
            self._push(TokenChunk(request_id, "", stream.produced, "error", str(error)))
        except (httpx.HTTPError, ValueError) as error:
            log.warning("vLLM stream for reply %s broke: %s", request_id, error)
            message = f"the vLLM server at {self.url} failed mid-reply: {error or type(error).__name__}"
            self._push(TokenChunk(request_id, "", stream.produced, "error", message))
        except Exception as error:  # a bug here must still finish the reply, or it would wait for ever
            log.exception("the vLLM stream for reply %s failed", request_id)
            self._push(TokenChunk(request_id, "", stream.produced, "error", f"the vLLM client failed: {error!r}"))

    async def _generate(self, stream: _Stream, *, retried: bool = False) -> None:
        request = stream.request
        body = completion_body(request, self.served_model)
        async with self._client.stream("POST", "/v1/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                message = server_message(response)
                if request.adapter and response.status_code == 404 and not retried:
                    # The server lost the adapter (restarted, or another worker unloaded it): load it
                    # again once, then ask again.
                    if await self._reload(request.adapter):
                        await self._generate(stream, retried=True)
                        return
                raise VllmError(f"vLLM refused the request ({response.status_code}): {message}")
            async for data in sse_data(response.aiter_lines()):
                if data.strip() == "[DONE]":
                    break
                if self._take_event(stream, json.loads(data)):
                    return
        raise VllmError("the vLLM stream ended without a finish reason")

    def _take_event(self, stream: _Stream, event: dict[str, Any]) -> bool:
        """Push one streamed event's text as a chunk; True once the request has finished."""
        request_id = stream.request.request_id
        if "error" in event:
            error = event["error"]
            raise VllmError(str(error.get("message", error) if isinstance(error, dict) else error))
        choices = event.get("choices") or []
        usage = event.get("usage") or {}
        text = "".join(str(c.get("text") or "") for c in choices)
        token_ids = tuple(t for c in choices for t in (c.get("token_ids") or ()))
        if choices:
            counted = usage.get("completion_tokens")
            stream.produced = int(counted) if counted is not None else stream.produced + max(1, len(token_ids))
            if stream.first_token_at is None:
                stream.first_token_at = time.monotonic()
                self.metrics_store.record_first_token(
                    stream.first_token_at - stream.started, int(usage.get("prompt_tokens") or 0)
                )
        reason = next((c.get("finish_reason") for c in choices if c.get("finish_reason")), None)
        if reason is None:
            if text or token_ids:
                self._push(TokenChunk(request_id, text, stream.produced, token_ids=token_ids))
            return False
        finish = FINISH.get(str(reason))
        if finish is None:
            self._push(TokenChunk(request_id, text, stream.produced, "error", f"vLLM ended the reply: {reason}"))
        else:
            self._push(TokenChunk(request_id, text, stream.produced, finish, token_ids=token_ids))
        return True

    # -- adapters ---------------------------------------------------------------------------------

    def server_path(self, path: Path | str) -> str:
        """The adapter folder as the server sees it: relative paths lie in the adapters folder,
        which a server elsewhere mounts at ``server_adapters_dir``."""
        folder = Path(path)
        if not folder.is_absolute():
            if self.server_adapters_dir:
                return str(Path(self.server_adapters_dir) / folder)
            if self.adapters_dir is not None:
                folder = self.adapters_dir / folder
            return str(folder.resolve())
        if self.server_adapters_dir and self.adapters_dir is not None and folder.is_relative_to(self.adapters_dir):
            return str(Path(self.server_adapters_dir) / folder.relative_to(self.adapters_dir))
        return str(folder)

    def load_adapter(self, name: str, path: Path | str) -> None:
        """Load a version's peft adapter into the server, under the version's name (what a reply
        names as its model). One already loaded under that name (another worker on the same
        server loaded it) is served as it is: version names are unique."""
        lora_path = self.server_path(path)
        response = self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": lora_path})
        if response.status_code != 200 and "already been loaded" not in server_message(response):
            raise VllmError(f"vLLM refused adapter {name} ({lora_path}): {server_message(response)}")
        self._adapter_paths[name] = lora_path

    def unload_adapter(self, name: str) -> None:
        """Unload from the server; one it no longer holds is already gone."""
        self._adapter_paths.pop(name, None)
        response = self._post("/v1/unload_lora_adapter", {"lora_name": name})
        if response.status_code != 200 and response.status_code != 404 and "not found" not in server_message(response):
            raise VllmError(f"vLLM refused to unload adapter {name}: {server_message(response)}")

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        try:
            return httpx.post(f"{self.url}{path}", json=body, timeout=httpx.Timeout(120.0, connect=10.0))
        except httpx.HTTPError as error:
            raise VllmError(f"vLLM at {self.url} does not answer: {error}") from error

    async def _reload(self, name: str) -> bool:
        path = self._adapter_paths.get(name)
        if path is None:
            return False
        log.warning("vLLM lost adapter %s: loading it again", name)
        response = await self._client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path})
        return response.status_code == 200 or "already been loaded" in server_message(response)
