"""Per-step attention metadata, built once by the model runner and read by every layer.

The step's tokens are flattened into rows ``0 .. T-1``. Sequences with one new token (decodes)
are attended as one group; sequences with several (prefill chunks) one by one. A sequence's
context is ``table[row, :ctx]`` of the slot table (``slot_table.py``), in position order, new
tokens included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from engine.attention.triton_extend import ExtendPlan


@dataclass
class DecodeGroup:
    rows: torch.Tensor
    """long [B]: row of each decode token in the step."""
    seq_rows: torch.Tensor
    """[B]: each sequence's row in the slot table."""
    lengths: torch.Tensor
    """[B]: context length per sequence (the query sits at position length - 1)."""
    max_length: int
    """The longest context; 0 where unknown (a captured CUDA graph serves any lengths)."""
    splits: int = 1
    """Spans per context for the GPU kernel (split-K)."""
    whole_step: bool = False
    """Every row of the step is a decode, in order: queries need no gather."""


@dataclass
class PrefillSeq:
    row_start: int
    length: int
    """Query tokens in this chunk."""
    start: int
    """Position of the first query token; the context is start + length tokens."""
    slots: torch.Tensor
    """long [start + length]: context slots."""
    table_row: int = -1
    """Its row in the slot table (the extend kernel reads the slots there)."""


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor
    """long [T]: where each row's new K/V is written."""
    decode: DecodeGroup | None
    prefills: list[PrefillSeq]
    table: torch.Tensor
    """int32 [R, W]: the slot table (``engine.attention.slot_table``)."""
    prefill_kernel: str = "sdpa"
    """``sdpa`` (gather + torch SDPA per chunk) or ``triton`` (``triton_extend``, one launch for all)."""
    _masks: dict[tuple[object, ...], torch.Tensor] = field(default_factory=dict)
    _extend: ExtendPlan | None = None

    def extend_plan(self) -> ExtendPlan:
        """The extend kernel's launch plan for the prefill chunks, built once per step (on first use)
        for every layer."""
        if self._extend is None:
            from engine.attention.triton_extend import extend_plan

            chunks = [(p.row_start, p.length, p.start, p.table_row) for p in self.prefills]
            self._extend = extend_plan(chunks, self.table, len(self.slot_mapping))
        return self._extend

    def decode_slots(self) -> torch.Tensor:
        """long [B, max_length]: context slots per decode sequence, padded with the table's pad."""
        assert self.decode is not None and self.decode.max_length > 0
        return self.table[self.decode.seq_rows.long(), : self.decode.max_length].long()

    def decode_mask(self, window: int | None) -> torch.Tensor:
        """bool [B, 1, 1, L], True where the query may attend."""
        key = ("decode", window)
        if key not in self._masks:
            assert self.decode is not None
            lengths = self.decode.lengths.long().unsqueeze(1)  # [B, 1]
            k_pos = torch.arange(self.decode.max_length, device=lengths.device).unsqueeze(0)
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


def build_metadata(chunks: list[tuple[int, int, int, list[int]]], table: torch.Tensor,
                   device: torch.device, *, splits: int = 1, prefill_kernel: str = "sdpa") -> AttentionMetadata:
    """chunks: ``(start, length, table_row, slots)`` per sequence, in row order; the table row
    already holds the context slots of positions ``0 .. start + length - 1`` (``slots`` too)."""
    slot_mapping: list[int] = []
    decode_rows: list[int] = []
    seq_rows: list[int] = []
    lengths: list[int] = []
    prefills: list[PrefillSeq] = []
    row = 0
    for start, length, table_row, slots in chunks:
        slot_mapping.extend(slots[start:start + length])
        if length == 1:
            decode_rows.append(row)
            seq_rows.append(table_row)
            lengths.append(start + 1)
        else:
            prefills.append(PrefillSeq(row, length, start, table[table_row, : start + length].long(), table_row))
        row += length
    decode = None
    if decode_rows:
        decode = DecodeGroup(
            rows=torch.tensor(decode_rows, dtype=torch.long, device=device),
            seq_rows=torch.tensor(seq_rows, dtype=torch.int32, device=device),
            lengths=torch.tensor(lengths, dtype=torch.int32, device=device),
            max_length=max(lengths), splits=splits, whole_step=not prefills,
        )
    return AttentionMetadata(torch.tensor(slot_mapping, dtype=torch.long, device=device), decode, prefills, table,
                             prefill_kernel)
