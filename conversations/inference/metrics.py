"""Serving figures the worker exposes and logs: latency percentiles over recent replies, rates, totals."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None when there is nothing to rank."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


class EngineMetrics:
    def __init__(self, window: int = 1000, rate_window_s: float = 10.0) -> None:
        self._lock = threading.Lock()
        self.ttft_s: deque[float] = deque(maxlen=window)  # submit → first token, recent replies
        self.tpot_s: deque[float] = deque(maxlen=window)  # mean gap between later tokens, per reply
        self._recent_tokens: deque[tuple[float, int]] = deque()  # (time, tokens) per step
        self.rate_window_s = rate_window_s
        self.tokens_total = 0
        self.prompt_tokens_total = 0
        self.prompt_tokens_reused_total = 0  # served from the prefix cache instead of computed
        self.requests_total = 0
        self.steps_total = 0
        self.finished: Counter[str] = Counter()
        self.rejected_total = 0

    def record_submit(self) -> None:
        with self._lock:
            self.requests_total += 1

    def record_reject(self) -> None:
        with self._lock:
            self.rejected_total += 1

    def record_first_token(self, ttft_s: float, prompt_tokens: int, reused_tokens: int = 0) -> None:
        with self._lock:
            self.ttft_s.append(ttft_s)
            self.prompt_tokens_total += prompt_tokens
            self.prompt_tokens_reused_total += reused_tokens

    def record_finish(self, reason: str, tokens: int, decode_s: float) -> None:
        with self._lock:
            self.finished[reason] += 1
            if tokens > 1:
                self.tpot_s.append(decode_s / (tokens - 1))

    def record_step(self, tokens: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self.steps_total += 1
            self.tokens_total += tokens
            self._recent_tokens.append((now, tokens))
            while self._recent_tokens and self._recent_tokens[0][0] < now - self.rate_window_s:
                self._recent_tokens.popleft()

    def tokens_per_s(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        recent = [(t, n) for t, n in self._recent_tokens if t >= now - self.rate_window_s]
        if not recent:
            return 0.0
        span = max(now - recent[0][0], 1e-3)
        return sum(n for _, n in recent) / span

    def snapshot(self, *, queued: int, running: int) -> dict[str, object]:
        with self._lock:
            ttft, tpot = list(self.ttft_s), list(self.tpot_s)
            return {
                "queued": queued,
                "running": running,
                "ttft_p50_s": percentile(ttft, 50),
                "ttft_p95_s": percentile(ttft, 95),
                "tpot_p50_s": percentile(tpot, 50),
                "tpot_p95_s": percentile(tpot, 95),
                "tokens_per_s": round(self.tokens_per_s(), 2),
                "tokens_total": self.tokens_total,
                "prompt_tokens_total": self.prompt_tokens_total,
                "prompt_tokens_reused_total": self.prompt_tokens_reused_total,
                "requests_total": self.requests_total,
                "rejected_total": self.rejected_total,
                "steps_total": self.steps_total,
                "finished": dict(self.finished),
            }
