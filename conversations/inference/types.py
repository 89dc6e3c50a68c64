"""The seam between the web side and the inference engine.

Plain dataclasses, no torch: the web process, the worker and the engine all import these.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

FinishReason = Literal["stop", "length", "cancelled", "timeout", "error"]


class QueueFull(Exception):
    """The engine's waiting queue is at its bound; the caller should retry later."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 0.9
    top_k: int = 0  # 0 disables top-k
    repetition_penalty: float = 1.1
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # benchmarks: always generate max_new_tokens


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    prompt_ids: tuple[int, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    adapter: str | None = None  # a loaded adapter's name; None is the bare base model
    timeout_s: float | None = None


@dataclass(frozen=True)
class TokenChunk:
    request_id: str
    text: str  # newly decoded text since the previous chunk of this request (may be "")
    token_count: int  # tokens generated so far for this request
    finish_reason: FinishReason | None = None
    error: str | None = None
    token_ids: tuple[int, ...] = ()  # the token ids generated since the previous chunk (EOS included)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


Emit = Callable[[list[TokenChunk]], None]
"""Called by an engine's decode loop with the chunks of one step (from the engine's thread)."""


class Tokenizer(Protocol):
    """What the worker and the prompt builder need of a tokenizer (transformers', the fake's).

    A chat is a ``list`` of ``dict``s because that is what transformers accepts; what the template
    returns depends on its options (text, ids, a ``BatchEncoding``), so the caller narrows it.
    """

    def encode(self, text: str, *, add_special_tokens: bool = ...) -> list[int]: ...

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: Any) -> Any: ...


class Engine(Protocol):
    """One generation backend: the built-in engine, the scripted fake, the vLLM client.

    ``run`` is the decode loop, called once on a thread of its own; it calls ``emit`` with each
    step's chunks until ``stop`` is set. ``submit`` and ``cancel`` may be called from any thread.
    """

    model_name: str
    max_positions: int  # the model's context in tokens: prompt plus reply

    @property
    def tokenizer(self) -> Tokenizer: ...

    def submit(self, request: GenerationRequest) -> None: ...

    def cancel(self, request_id: str) -> None: ...

    def run(self, emit: Emit, stop: threading.Event) -> None: ...

    def load_adapter(self, name: str, path: Path | str) -> None: ...

    def unload_adapter(self, name: str) -> None: ...

    def metrics(self) -> Mapping[str, object]: ...
