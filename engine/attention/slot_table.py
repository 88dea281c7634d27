"""The slot table: each in-flight sequence's context slots, one row per sequence, on the device.

``table[row, pos]`` is the KV slot of position ``pos``. Kernels find a sequence's K/V through its
row, so a decode step sends the GPU a row index and a length per sequence instead of a padded
``[B, max_len]`` slot list; the CPU writes only the slots a step adds (one per decoding sequence).

A row is bound to a sequence's ``slots`` list: the scheduler only ever appends to that list, or
replaces it with a new one (retraction, a new turn matched against the prefix cache), so a changed
list identity means "rewrite from position 0". Rows are released when a request ends or is
retracted; the last row (``pad_row``) is never handed out and stays all ``pad_slot``, for padded
rows of a CUDA-graph batch.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from engine.errors import EngineError


@dataclass
class _Binding:
    row: int
    slots: list[int]
    written: int = 0


class SlotTable:
    def __init__(self, rows: int, width: int, pad_slot: int, device: torch.device) -> None:
        self.table = torch.full((rows + 1, width), pad_slot, dtype=torch.int32, device=device)
        self.pad_row = rows
        self.width = width
        self._free = list(range(rows - 1, -1, -1))
        self._bound: dict[object, _Binding] = {}

    def row(self, seq: object) -> int:
        return self._bound[seq].row

    def sync(self, entries: Seq[tuple[object, list[int], int]]) -> list[int]:
        """Make rows hold ``slots[:end]`` for each ``(seq, slots, end)``; returns their rows."""
        rows: list[int] = []
        row_idx: list[int] = []
        col_idx: list[int] = []
        values: list[int] = []
        for seq, slots, end in entries:
            bound = self._bound.get(seq)
            if bound is None:
                if not self._free:
                    raise EngineError(f"slot table full: {len(self._bound)} sequences hold rows")
                bound = self._bound[seq] = _Binding(self._free.pop(), slots)
            elif bound.slots is not slots:
                bound.slots, bound.written = slots, 0
            if end > self.width:
                raise EngineError(f"context of {end} tokens exceeds the slot table's width {self.width}")
            if end > bound.written:
                row_idx.extend([bound.row] * (end - bound.written))
                col_idx.extend(range(bound.written, end))
                values.extend(slots[bound.written:end])
                bound.written = end
            rows.append(bound.row)
        if values:
            update = torch.tensor([row_idx, col_idx, values], dtype=torch.int64)
            update = update.to(self.table.device, non_blocking=True)
            self.table[update[0], update[1]] = update[2].to(torch.int32)
        return rows

    def release(self, seq: object) -> None:
        bound = self._bound.pop(seq, None)
        if bound is not None:
            self._free.append(bound.row)

    @property
    def rows_in_use(self) -> int:
        return len(self._bound)
