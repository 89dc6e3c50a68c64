"""The seam between the web side and the inference engine.

Plain dataclasses, no torch: the web process, the worker and the engine all import these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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
