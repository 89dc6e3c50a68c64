"""A scripted engine with the real engine's interface, for fast tests of everything around it.

It never imports torch. Each request's reply is looked up in ``script`` by the last user text
(or ``default_reply``), and one word is emitted per step, with ``step_delay_s`` between steps.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .types import GenerationRequest, QueueFull, TokenChunk


class FakeAdapterError(RuntimeError):
    """The fake's counterpart of the real engine's AdapterLoadError (which needs torch to import)."""


class WordTokenizer:
    """Enough of a tokenizer for the worker: a chat template and token counting."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [len(word) for word in text.split()]

    def __init__(self) -> None:
        self.chats: dict[tuple[int, ...], list[dict[str, str]]] = {}

    def apply_chat_template(self, conversation: list[dict[str, str]], **_: object) -> list[int]:
        ids = self.encode(" ".join(f"<{m['role']}> {m['content']}" for m in conversation))
        self.chats[tuple(ids)] = conversation
        return ids

    def chat_of(self, prompt_ids: Sequence[int]) -> list[dict[str, str]]:
        """The chat templated into ``prompt_ids``, which may go on past it (a reply's leading answer)."""
        ids = tuple(prompt_ids)
        found = self.chats.get(ids)
        if found is None:
            keys = [key for key in self.chats if ids[: len(key)] == key]
            found = self.chats[max(keys, key=len)] if keys else []
        return found


@dataclass
class _Running:
    request: GenerationRequest
    words: deque[str]
    produced: int = 0
    started: float = field(default_factory=time.monotonic)


class FakeEngine:
    model_name = "fake-engine"
    max_positions = 8192  # no model behind it: a context as large as the prompt settings allow

    def __init__(
        self,
        script: dict[str, str] | None = None,
        *,
        default_reply: str = "Hello! How can I help you today?",
        step_delay_s: float = 0.01,
        max_running: int = 8,
        max_queue: int = 64,
    ) -> None:
        self.tokenizer = WordTokenizer()
        self.script = script or {}
        self.default_reply = default_reply
        self.step_delay_s = step_delay_s
        self.max_running = max_running
        self.max_queue = max_queue
        self.adapters: dict[str, str] = {}
        self.submitted: list[GenerationRequest] = []
        self._queue: deque[GenerationRequest] = deque()
        self._running: dict[str, _Running] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self._wakeup = threading.Event()

    def submit(self, request: GenerationRequest) -> None:
        with self._lock:
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are waiting")
            self._queue.append(request)
            self.submitted.append(request)
        self._wakeup.set()

    def cancel(self, request_id: str) -> None:
        with self._lock:
            self._cancelled.add(request_id)
        self._wakeup.set()

    def load_adapter(self, name: str, path: object) -> None:
        """Refuses a folder the real engine would refuse first: one without a peft config."""
        if not (Path(str(path)) / "adapter_config.json").is_file():
            raise FakeAdapterError(f"cannot read a peft adapter from {path}: no adapter_config.json")
        self.adapters[name] = str(path)

    def unload_adapter(self, name: str) -> None:
        self.adapters.pop(name, None)

    def has_work(self) -> bool:
        return bool(self._queue or self._running)

    def metrics(self) -> dict[str, float]:
        return {"queued": len(self._queue), "running": len(self._running)}

    def step(self) -> list[TokenChunk]:
        with self._lock:
            while self._queue and len(self._running) < self.max_running:
                request = self._queue.popleft()
                reply = self.script.get(self._last_user_text(request), self.default_reply)
                self._running[request.request_id] = _Running(request, deque(reply.split(" ")))
            cancelled, self._cancelled = self._cancelled, set()
        chunks = []
        for request_id, run in list(self._running.items()):
            chunks.append(self._advance(run, cancelled=request_id in cancelled))
            if chunks[-1].finished:
                del self._running[request_id]
        time.sleep(self.step_delay_s)
        return chunks

    def run(self, emit: Callable[[list[TokenChunk]], None], stop: threading.Event) -> None:
        while not stop.is_set():
            if not self.has_work():
                self._wakeup.wait(0.1)
                self._wakeup.clear()
                continue
            emit(self.step())

    def _advance(self, run: _Running, *, cancelled: bool) -> TokenChunk:
        request_id = run.request.request_id
        if cancelled:
            return TokenChunk(request_id, "", run.produced, "cancelled")
        if run.request.adapter and run.request.adapter not in self.adapters:
            return TokenChunk(request_id, "", 0, "error", f"adapter {run.request.adapter!r} is not loaded")
        if run.request.timeout_s is not None and time.monotonic() - run.started > run.request.timeout_s:
            return TokenChunk(request_id, "", run.produced, "timeout")
        word = run.words.popleft()
        text = word if run.produced == 0 else " " + word
        run.produced += 1
        if not run.words:
            return TokenChunk(request_id, text, run.produced, "stop")
        if run.produced >= run.request.sampling.max_new_tokens:
            return TokenChunk(request_id, text, run.produced, "length")
        return TokenChunk(request_id, text, run.produced)

    def _last_user_text(self, request: GenerationRequest) -> str:
        messages = self.tokenizer.chat_of(request.prompt_ids)
        users = [m["content"] for m in messages if m["role"] == "user"]
        return users[-1] if users else ""
