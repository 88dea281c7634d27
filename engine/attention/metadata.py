"""Per-step attention metadata, built once by the model runner and read by every layer.

The step's tokens are flattened into rows ``0 .. T-1``. Sequences with one new token (decodes)
are attended as one padded group; sequences with several (prefill chunks) one by one. A
sequence's context is ``slots[:ctx]`` of the KV pool, in position order, new tokens included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class DecodeGroup:
    rows: torch.Tensor
    """long [B]: row of each decode token in the step."""
    slot_table: torch.Tensor
    """long [B, L]: context slots per sequence, padded with the pool's pad slot to L = max ctx."""
    lengths: torch.Tensor
    """long [B]: context length per sequence (the query sits at position length - 1)."""


@dataclass
class PrefillSeq:
    row_start: int
    length: int
    """Query tokens in this chunk."""
    start: int
    """Position of the first query token; the context is start + length tokens."""
    slots: torch.Tensor
    """long [start + length]: context slots."""


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor
    """long [T]: where each row's new K/V is written."""
    decode: DecodeGroup | None
    prefills: list[PrefillSeq]
    _masks: dict[tuple[object, ...], torch.Tensor] = field(default_factory=dict)

    def decode_mask(self, window: int | None) -> torch.Tensor:
        """bool [B, 1, 1, L], True where the query may attend."""
        key = ("decode", window)
        if key not in self._masks:
            assert self.decode is not None
            lengths = self.decode.lengths.unsqueeze(1)  # [B, 1]
            k_pos = torch.arange(self.decode.slot_table.shape[1], device=lengths.device).unsqueeze(0)
            keep = k_pos < lengths
            if window is not None:
                keep &= k_pos > lengths - 1 - window
            self._masks[key] = keep[:, None, None, :]
        return self._masks[key]

    def prefill_mask(self, index: int, window: int | None) -> torch.Tensor | None:
        """bool [n, ctx], or None when plain causal attention (``is_causal``) is exact."""
        seq = self.prefills[index]
        if seq.start == 0 and window is None:
            return None
        key = ("prefill", index, window)
        if key not in self._masks:
            device = seq.slots.device
            q_pos = torch.arange(seq.start, seq.start + seq.length, device=device).unsqueeze(1)
            k_pos = torch.arange(seq.start + seq.length, device=device).unsqueeze(0)
            keep = k_pos <= q_pos
            if window is not None:
                keep &= k_pos > q_pos - window
            self._masks[key] = keep
        return self._masks[key]


def build_metadata(chunks: list[tuple[int, int, list[int]]], pad_slot: int,
                   device: torch.device) -> AttentionMetadata:
    """chunks: ``(start, length, context_slots)`` per sequence, in row order; ``context_slots``
    covers positions ``0 .. start + length - 1``."""
    slot_mapping: list[int] = []
    decode_rows: list[int] = []
    decode_slots: list[list[int]] = []
    prefills: list[PrefillSeq] = []
    row = 0
    for start, length, slots in chunks:
        slot_mapping.extend(slots[start:start + length])
        if length == 1:
            decode_rows.append(row)
            decode_slots.append(slots)
        else:
            prefills.append(PrefillSeq(row, length, start,
                                       torch.tensor(slots, dtype=torch.long, device=device)))
        row += length
    decode = None
    if decode_rows:
        width = max(len(s) for s in decode_slots)
        table = [s + [pad_slot] * (width - len(s)) for s in decode_slots]
        decode = DecodeGroup(
            rows=torch.tensor(decode_rows, dtype=torch.long, device=device),
            slot_table=torch.tensor(table, dtype=torch.long, device=device),
            lengths=torch.tensor([len(s) for s in decode_slots], dtype=torch.long, device=device),
        )
    return AttentionMetadata(torch.tensor(slot_mapping, dtype=torch.long, device=device), decode, prefills)
