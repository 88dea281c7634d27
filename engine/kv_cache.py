"""The KV pool: one K and one V tensor per layer, indexed by *slot* (one slot holds one token's K/V
for every KV head), and the allocator that hands slots out.

Slots are token-granular (a page of one token), so a radix-tree node can own any number of them
and a prefix can be shared at any token boundary. One extra slot, ``pad_slot``, lies past the
allocatable range: padded rows of a batch (CUDA graphs later) write their K/V there harmlessly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

CPU_DEFAULT_MAX_KV_TOKENS = 1 << 18
"""Cap on the pool size picked automatically on CPU (memory on CPU is shared with everything)."""


class SlotAllocator:
    """Free-list of KV slot indices ``0 .. num_slots - 1``. Pure Python; no torch."""

    def __init__(self, num_slots: int) -> None:
        if num_slots < 1:
            raise ValueError(f"num_slots must be >= 1, got {num_slots}")
        self.num_slots = num_slots
        # Reversed so that pop() hands out low indices first (easier to read in tests and dumps).
        self._free = list(range(num_slots - 1, -1, -1))

    @property
    def num_free(self) -> int:
        return len(self._free)

    def alloc(self, n: int) -> list[int]:
        if n > len(self._free):
            raise MemoryError(f"asked for {n} KV slots, {len(self._free)} free")
        if n == 0:
            return []
        taken = self._free[-n:]
        del self._free[-n:]
        return taken

    def free(self, slots: list[int]) -> None:
        self._free.extend(slots)


@dataclass(frozen=True)
class KVLayout:
    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: torch.dtype

    @property
    def bytes_per_token(self) -> int:
        """K and V of one token across all layers."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype.itemsize


class KVPool:
    """Per-layer K/V storage: ``k[layer]`` and ``v[layer]`` are ``[num_slots + 1, kv_heads, head_dim]``."""

    def __init__(self, layout: KVLayout, num_slots: int, device: torch.device) -> None:
        self.layout = layout
        self.num_slots = num_slots
        self.pad_slot = num_slots
        shape = (layout.num_layers, num_slots + 1, layout.num_kv_heads, layout.head_dim)
        # One allocation per K and V; views per layer. torch.empty leaves pages untouched on CPU.
        self._k = torch.empty(shape, dtype=layout.dtype, device=device)
        self._v = torch.empty(shape, dtype=layout.dtype, device=device)
        self.k = list(self._k.unbind(0))
        self.v = list(self._v.unbind(0))
        log.info("KV pool: %d slots x %.1f KiB = %.1f MiB on %s", num_slots,
                 layout.bytes_per_token / 1024, num_slots * layout.bytes_per_token / 2**20, device)


def size_kv_pool(layout: KVLayout, device: torch.device, *, max_kv_tokens: int | None,
                 memory_fraction: float, max_context: int) -> int:
    """Number of slots: ``max_kv_tokens`` if given, else ``memory_fraction`` of the free memory.

    On CUDA the fraction is of the memory free after the weights were loaded; on CPU it is of
    ``MemAvailable`` and the result is capped at ``CPU_DEFAULT_MAX_KV_TOKENS``.
    """
    if max_kv_tokens is not None:
        return max_kv_tokens
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        slots = int(free * memory_fraction) // layout.bytes_per_token
    else:
        slots = int(_available_host_memory() * memory_fraction) // layout.bytes_per_token
        slots = min(slots, max(CPU_DEFAULT_MAX_KV_TOKENS, max_context))
    if slots < 1:
        raise MemoryError(f"no memory left for the KV cache on {device} "
                          f"({layout.bytes_per_token} bytes per token); pass max_kv_tokens")
    return slots


def _available_host_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30  # unknown platform: assume 4 GiB

