"""Keys and values of token prefixes already computed, so a prompt that starts the same way skips them.

Every chat the worker serves starts with the same system prompt, and each turn of a conversation
starts with the whole previous turn: the prompt, then the reply the engine itself generated. Their
keys and values depend only on the tokens before them (and on the adapter that computed them), so
the engine keeps them here after a prefill and after a reply, and a later prefill computes only
what follows the longest cached prefix. vLLM calls this automatic prefix caching.

An entry holds one token sequence and its keys and values for every layer,
``(layers, 2, kv_heads, tokens, head_dim)``. Entries are evicted least recently used first, to a
budget in tokens; an entry that a newer one extends is dropped, since the newer one serves every
prompt the older one did. Only the engine's model thread touches the cache.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

_keys = itertools.count()


@dataclass(eq=False)
class Entry:
    adapter_key: str | None
    tokens: tuple[int, ...]
    kv: torch.Tensor  # (layers, 2, kv_heads, len(tokens), head_dim)
    key: int = field(default_factory=lambda: next(_keys))


@dataclass(frozen=True)
class Hit:
    entry: Entry
    length: int  # how many leading tokens of the prompt the entry's keys and values cover

    @property
    def kv(self) -> torch.Tensor:
        return self.entry.kv[:, :, :, : self.length]


def common_prefix_length(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """The length of the longest common prefix, found by bisection over slice comparisons (C speed)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


class PrefixCache:
    def __init__(self, budget_tokens: int, min_tokens: int = 8) -> None:
        self.budget_tokens = budget_tokens
        self.min_tokens = min_tokens  # shorter matches are not worth a separate forward layout
        self._entries: OrderedDict[int, Entry] = OrderedDict()  # key → entry, least recently used first
        self.tokens = 0

    @property
    def enabled(self) -> bool:
        return self.budget_tokens > 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, adapter_key: str | None, prompt: tuple[int, ...]) -> Hit | None:
        """The longest cached prefix of ``prompt`` computed by the same adapter, leaving one token to run.

        The last prompt token always runs: its logits choose the first reply token.
        """
        best: Hit | None = None
        usable = len(prompt) - 1
        for entry in self._entries.values():
            if entry.adapter_key != adapter_key:
                continue
            length = min(common_prefix_length(entry.tokens, prompt), usable)
            if length >= self.min_tokens and (best is None or length > best.length):
                best = Hit(entry, length)
        if best is not None:
            self._entries.move_to_end(best.entry.key)
        return best

    def store(self, adapter_key: str | None, tokens: tuple[int, ...], read_kv: Callable[[], torch.Tensor]) -> None:
        """Keep the keys and values of ``tokens``, within the budget.

        ``read_kv`` returns a copy that nobody writes afterwards; it is called only when the entry
        is kept, so offering what is already covered costs no copy.
        """
        if not self.enabled or len(tokens) < self.min_tokens or len(tokens) > self.budget_tokens:
            return
        for key, entry in list(self._entries.items()):
            if entry.adapter_key != adapter_key:
                continue
            if entry.tokens[: len(tokens)] == tokens:  # already covered by a longer (or equal) entry
                self._entries.move_to_end(key)
                return
            if tokens[: len(entry.tokens)] == entry.tokens:  # the new entry extends this one
                self._remove(key)
        entry = Entry(adapter_key, tokens, read_kv())
        self._entries[entry.key] = entry
        self.tokens += len(tokens)
        while self.tokens > self.budget_tokens:
            self._remove(next(iter(self._entries)))

    def drop_adapter(self, adapter_key: str) -> None:
        """Forget what an adapter version computed, once it is unloaded."""
        for key in [k for k, e in self._entries.items() if e.adapter_key == adapter_key]:
            self._remove(key)

    def clear(self) -> None:
        self._entries.clear()
        self.tokens = 0

    def _remove(self, key: int) -> None:
        self.tokens -= len(self._entries.pop(key).tokens)
