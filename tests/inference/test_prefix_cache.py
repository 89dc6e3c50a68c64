"""The prefix cache alone: which entry a prompt reuses, what a new entry replaces, what is evicted."""

from __future__ import annotations

import torch

from conversations.inference.prefix_cache import PrefixCache, common_prefix_length


def kv(tokens: tuple[int, ...]) -> torch.Tensor:
    """Keys and values whose every position holds its token id, so a hit shows what it covers."""
    return torch.tensor(tokens, dtype=torch.float32).view(1, 1, 1, -1, 1).expand(2, 2, 3, -1, 4).clone()


def store(cache: PrefixCache, tokens: tuple[int, ...], adapter: str | None = None) -> list[int]:
    reads: list[int] = []
    cache.store(adapter, tokens, lambda: reads.append(len(tokens)) or kv(tokens))
    return reads


SYSTEM = tuple(range(100, 124))  # a shared system prompt of 24 tokens


def test_common_prefix_length_finds_the_first_difference() -> None:
    assert common_prefix_length((1, 2, 3, 4), (1, 2, 9)) == 2
    assert common_prefix_length((1, 2), (1, 2, 3)) == 2
    assert common_prefix_length((), (1,)) == 0
    assert common_prefix_length((5,), (6,)) == 0
    long = tuple(range(1000))
    assert common_prefix_length(long, long[:700] + (-1,)) == 700


def test_a_prompt_reuses_the_longest_entry_and_always_leaves_its_last_token_to_run() -> None:
    cache = PrefixCache(budget_tokens=1000)
    store(cache, SYSTEM + (1, 2))
    store(cache, SYSTEM + (7, 8, 9, 10))
    hit = cache.lookup(None, SYSTEM + (7, 8, 9, 11, 12))
    assert hit is not None and hit.length == len(SYSTEM) + 3
    assert hit.kv[0, 0, 0, :, 0].tolist() == list(SYSTEM + (7, 8, 9))
    same = cache.lookup(None, SYSTEM + (7, 8, 9, 10))  # the whole prompt is cached: its last token still runs
    assert same is not None and same.length == len(SYSTEM) + 3
    assert cache.lookup(None, (1, 2, 3) + SYSTEM) is None


def test_short_matches_and_other_adapters_are_misses() -> None:
    cache = PrefixCache(budget_tokens=1000, min_tokens=8)
    store(cache, SYSTEM)
    assert cache.lookup(None, SYSTEM[:5] + (0,) * 10) is None  # 5 shared tokens: below min_tokens
    assert cache.lookup("adapter_1", SYSTEM + (1,)) is None  # computed by the base model, not this adapter
    store(cache, SYSTEM, adapter="adapter_1")
    assert cache.lookup("adapter_1", SYSTEM + (1,)) is not None
    cache.drop_adapter("adapter_1")
    assert cache.lookup("adapter_1", SYSTEM + (1,)) is None
    assert cache.lookup(None, SYSTEM + (1,)) is not None


def test_a_longer_entry_replaces_its_prefix_and_a_covered_one_costs_no_copy() -> None:
    cache = PrefixCache(budget_tokens=1000)
    assert store(cache, SYSTEM + (1,)) == [25]
    assert store(cache, SYSTEM + (1, 2, 3)) == [27]  # the next turn extends the first: it replaces it
    assert len(cache) == 1 and cache.tokens == 27
    assert store(cache, SYSTEM + (1, 2)) == []  # already covered: read_kv is never called
    assert len(cache) == 1


def test_entries_are_evicted_least_recently_used_first_within_the_budget() -> None:
    cache = PrefixCache(budget_tokens=60)
    store(cache, SYSTEM + (1,))
    store(cache, SYSTEM + (2,))
    assert cache.lookup(None, SYSTEM + (1, 5)) is not None  # touches the first entry
    store(cache, SYSTEM + (3,))  # 75 tokens > 60: the least recently used, (2,), goes
    assert cache.tokens == 50
    assert cache.lookup(None, SYSTEM + (2, 5)).entry.tokens != SYSTEM + (2,)  # type: ignore[union-attr]
    assert {e.tokens[-1] for e in cache._entries.values()} == {1, 3}
    store(cache, tuple(range(61)))  # larger than the whole budget: not kept
    assert cache.tokens == 50


def test_a_zero_budget_turns_it_off() -> None:
    cache = PrefixCache(budget_tokens=0)
    assert not cache.enabled
    assert store(cache, SYSTEM) == []
    assert cache.lookup(None, SYSTEM + (1,)) is None
