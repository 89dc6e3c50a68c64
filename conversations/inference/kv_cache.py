"""A slot KV cache: one preallocated buffer per layer, one row ("slot") per running reply.

Every running reply owns a row of the buffer. Its keys and values sit at positions 0..len-1 of
that row (right padding), so a decode step writes exactly one column per row and never copies
the rest of the cache. Rows stay packed at 0..n-1: when a reply leaves, the last row moves into
its hole (one row copy), so a step always runs on a dense batch of n rows.

The class plugs into transformers' ``Cache`` interface: the attention layers call ``update`` with
the step's keys and values and attend over what it returns; the engine passes its own 4D mask.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class SlotLayer(CacheLayerMixin):
    """One decoder layer's keys and values, ``(rows, kv_heads, capacity, head_dim)``."""

    # Allocated at once, never None (transformers' layers fill theirs lazily).
    keys: torch.Tensor
    values: torch.Tensor

    def __init__(self, kv_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device) -> None:
        # Unannotated in transformers; untyped_calls_exclude does not reach calls through super().
        super().__init__()  # type: ignore[no-untyped-call]
        self.kv_heads, self.head_dim = kv_heads, head_dim
        self.dtype, self.device = dtype, device
        # Zeros, not empty: masked columns still enter q·k, and garbage NaNs would survive the mask.
        self.keys = torch.zeros(0, kv_heads, 0, head_dim, dtype=dtype, device=device)
        self.values = torch.zeros_like(self.keys)
        self.is_initialized = True
        # Set by the cache before each forward: where each row writes (its length, expanded to
        # the key's shape for scatter_), how many columns to read.
        self.write_index: torch.Tensor | None = None
        self.read_len = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # key_states: (n, kv_heads, 1, head_dim), one new column per row at that row's own length.
        # One scatter_ per tensor: a two-index index_put_ cost about twice as much per call at
        # batch 1 (the same at 16), and a step makes 2 per layer.
        assert self.write_index is not None
        n = key_states.shape[0]
        self.keys[:n].scatter_(2, self.write_index, key_states)
        self.values[:n].scatter_(2, self.write_index, value_states)
        # (n, kv_heads, read_len, head_dim) views; columns past a row's length are masked out.
        return self.keys[:n, :, : self.read_len], self.values[:n, :, : self.read_len]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.read_len, 0

    def get_seq_length(self) -> int:
        return self.read_len

    def get_max_length(self) -> int:
        return int(self.keys.shape[2])

    def resize(self, rows: int, capacity: int) -> None:
        """Grow (never shrink below what is kept) to at least ``rows`` x ``capacity``, keeping contents."""
        old_rows, _, old_cap, _ = self.keys.shape
        if rows <= old_rows and capacity <= old_cap:
            return
        shape = (max(rows, old_rows), self.kv_heads, max(capacity, old_cap), self.head_dim)
        keys = torch.zeros(shape, dtype=self.dtype, device=self.device)
        values = torch.zeros_like(keys)
        keys[:old_rows, :, :old_cap] = self.keys
        values[:old_rows, :, :old_cap] = self.values
        self.keys, self.values = keys, values


class SlotCache(Cache):
    """All layers' slot buffers, plus the bookkeeping one decode step needs."""

    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device):
        self.slot_layers = [SlotLayer(kv_heads, head_dim, dtype, device) for _ in range(num_layers)]
        super().__init__(layers=list(self.slot_layers))
        self.device = device

    @property
    def rows(self) -> int:
        return int(self.slot_layers[0].keys.shape[0])

    @property
    def capacity(self) -> int:
        return int(self.slot_layers[0].keys.shape[2])

    def ensure(self, rows: int, length: int) -> None:
        """Make room for ``rows`` slots of ``length`` positions, doubling so growth is amortised."""
        if rows <= self.rows and length <= self.capacity:
            return
        new_rows = self.rows if rows <= self.rows else max(rows, 2 * self.rows, 4)
        new_cap = self.capacity if length <= self.capacity else max(length, 2 * self.capacity, 256)
        for layer in self.slot_layers:
            layer.resize(new_rows, new_cap)

    def prepare_step(self, lengths: torch.Tensor, read_len: int) -> None:
        """Before a decode forward: row i writes its new key at column ``lengths[i]``."""
        like = self.slot_layers[0]
        # (n, kv_heads, 1, head_dim): row i's column index, shared by every layer.
        index = lengths.view(-1, 1, 1, 1).expand(-1, like.kv_heads, 1, like.head_dim)
        for layer in self.slot_layers:
            layer.write_index, layer.read_len = index, read_len

    def fill_slot(self, slot: int, prefill: Cache, row: int, columns: torch.Tensor) -> None:
        """Copy the prefill cache's ``row`` at ``columns`` (in order) into positions 0.. of ``slot``."""
        for layer, source in zip(self.slot_layers, prefill.layers, strict=True):
            # A prefill cache of full-attention layers: each one holds the prompt's keys and values.
            assert isinstance(source, CacheLayerMixin) and source.keys is not None and source.values is not None
            layer.keys[slot, :, : columns.numel()] = source.keys[row].index_select(1, columns)
            layer.values[slot, :, : columns.numel()] = source.values[row].index_select(1, columns)

    def slot_kv(self, slot: int, length: int) -> torch.Tensor:
        """A copy of ``slot``'s first ``length`` positions, ``(layers, 2, kv_heads, length, head_dim)``."""
        return torch.stack(
            [torch.stack((layer.keys[slot, :, :length], layer.values[slot, :, :length])) for layer in self.slot_layers]
        )

    def move_slot(self, source: int, target: int, length: int) -> None:
        """Copy row ``source``'s first ``length`` positions into row ``target`` (compaction)."""
        for layer in self.slot_layers:
            layer.keys[target, :, :length] = layer.keys[source, :, :length]
            layer.values[target, :, :length] = layer.values[source, :, :length]

    def release(self) -> None:
        """Drop the buffers (when idle) so a burst's peak memory is given back."""
        for layer in self.slot_layers:
            layer.keys = layer.keys.new_zeros(0, layer.kv_heads, 0, layer.head_dim)
            layer.values = layer.values.new_zeros(0, layer.kv_heads, 0, layer.head_dim)
