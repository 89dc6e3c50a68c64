"""Turning a growing list of token ids into text deltas, safely.

Two small state machines per reply:

* ``IncrementalDecoder`` decodes only a short window of recent tokens and holds back a tail that
  does not yet form whole characters (a byte-level BPE token can end in the middle of an emoji,
  which decodes to U+FFFD until the next token completes it).
* ``StopMatcher`` finds stop strings across token boundaries and holds back any tail that could
  still become one, so a client never sees half of a stop string that is then retracted.
"""

from __future__ import annotations

from typing import Protocol, cast

REPLACEMENT = "\ufffd"


class Decodes(Protocol):
    # transformers' decode also takes a batch and then returns a list: the return covers both.
    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str | list[str]: ...


class IncrementalDecoder:
    def __init__(self, tokenizer: Decodes) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0  # start of the window re-decoded for context
        self.read_offset = 0  # tokens before this are already turned into text

    def _decode(self, ids: list[int]) -> str:
        return cast(str, self.tokenizer.decode(ids, skip_special_tokens=True))  # one sequence: one string

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (often "", never a partial character)."""
        self.ids.append(token_id)
        known = self._decode(self.ids[self.prefix_offset : self.read_offset])
        window = self._decode(self.ids[self.prefix_offset :])
        if len(window) <= len(known) or window.endswith(REPLACEMENT):
            return ""  # an unfinished multi-byte character: wait for the bytes that complete it
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return window[len(known) :].replace(REPLACEMENT, "")

    def flush(self) -> str:
        """At the end of a reply: whatever complete text the held-back tokens still make."""
        known = self._decode(self.ids[self.prefix_offset : self.read_offset])
        window = self._decode(self.ids[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.ids)
        return window[len(known) :].replace(REPLACEMENT, "")


class StopMatcher:
    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.pending = ""  # text decoded but not yet released

    def push(self, text: str) -> tuple[str, bool]:
        """Add decoded text; return (text safe to release, whether a stop string was hit)."""
        self.pending += text
        if not self.stops:
            released, self.pending = self.pending, ""
            return released, False
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            released, self.pending = self.pending[: min(hits)], ""
            return released, True
        keep = self._longest_stop_prefix_suffix()
        cut = len(self.pending) - keep
        released, self.pending = self.pending[:cut], self.pending[cut:]
        return released, False

    def flush(self) -> str:
        released, self.pending = self.pending, ""
        return released

    def _longest_stop_prefix_suffix(self) -> int:
        """Length of the longest tail of ``pending`` that is the start of some stop string."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.pending)), best, -1):
                if self.pending.endswith(stop[:n]):
                    best = n
                    break
        return best
