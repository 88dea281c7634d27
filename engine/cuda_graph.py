"""CUDA graphs for decode steps: the whole forward pass of a decode-only batch, captured once per
batch size and replayed, so a step costs one launch instead of several hundred.

Graphs are captured at batch sizes 1, 2, 4, 8, then every 8 up to 64, every 16 up to 128 and every
32 beyond, up to the runner's maximum. A step of ``n`` decodes replays the smallest graph of at
least ``n`` rows; rows past ``n`` are padding: token 0 at position 0, K/V written to the pool's pad
slot, attending the slot table's pad row (all pad slots) with length 1. Their hidden states are
dropped.

The graphs read five static inputs, one ``long [5, max_batch]`` tensor filled by one host-to-device
copy per step: token ids, positions, the slot each new K/V goes to, each sequence's slot-table row
and its context length. Lengths are read by the attention kernel on the GPU, so one graph serves
every context length; its split count is fixed at capture for its batch size. The graphs share one
memory pool, captured largest first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from engine.attention.metadata import AttentionMetadata, DecodeGroup

if TYPE_CHECKING:
    from engine.runner import ModelRunner
    from engine.scheduler import Chunk

log = logging.getLogger(__name__)

IDS, POSITIONS, SLOTS, ROWS, LENGTHS = range(5)


def batch_sizes(max_batch: int) -> list[int]:
    sizes = [s for s in (1, 2, 4) if s < max_batch]
    sizes += list(range(8, min(64, max_batch) + 1, 8))
    sizes += list(range(80, min(128, max_batch) + 1, 16))
    sizes += list(range(160, max_batch + 1, 32))
    if not sizes or sizes[-1] != max_batch:
        sizes.append(max_batch)
    return sorted(set(sizes))


class DecodeGraphs:
    def __init__(self, runner: ModelRunner, max_batch: int) -> None:
        self.runner = runner
        self.sizes = batch_sizes(max_batch)
        self.max_batch = self.sizes[-1]
        device = runner.device
        self.inputs = torch.zeros((5, self.max_batch), dtype=torch.long, device=device)
        # Two staging buffers, alternating: a step may be prepared while the previous step's copy
        # is still queued (run ahead); the one before that has completed by then.
        self._stagings = [torch.zeros((5, self.max_batch), dtype=torch.long, pin_memory=True) for _ in range(2)]
        self._staging = self._stagings[0]
        self._arange = torch.arange(self.max_batch, device=device)
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._hidden: dict[int, torch.Tensor] = {}

    def covers(self, batch: int) -> bool:
        return 0 < batch <= self.max_batch

    def _pad(self, start: int, stop: int) -> None:
        """Padding rows ``start:stop`` of the staging buffer."""
        rt = self.runner
        buf = self._staging
        buf[IDS, start:stop] = 0
        buf[POSITIONS, start:stop] = 0
        buf[SLOTS, start:stop] = rt.kv.pad_slot
        buf[ROWS, start:stop] = rt.slot_table.pad_row
        buf[LENGTHS, start:stop] = 1

    def _forward(self, batch: int) -> torch.Tensor:
        rt = self.runner
        x = self.inputs[:, :batch]
        decode = DecodeGroup(rows=self._arange[:batch], seq_rows=x[ROWS], lengths=x[LENGTHS], max_length=0,
                             splits=rt.splits(batch, None), whole_step=True)
        meta = AttentionMetadata(x[SLOTS], decode, [], rt.slot_table.table)
        return rt.model(x[IDS], x[POSITIONS], meta, rt.kv)

    @torch.inference_mode()
    def capture(self) -> None:
        began = time.perf_counter()
        self._pad(0, self.max_batch)
        self.inputs.copy_(self._staging)
        pool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for batch in reversed(self.sizes):
                for _ in range(2):  # compile the Triton kernels and warm cuBLAS outside the capture
                    self._forward(batch)
                torch.cuda.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool, stream=stream):
                    self._hidden[batch] = self._forward(batch)
                self._graphs[batch] = graph
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        log.info("captured %d decode CUDA graphs (batch 1..%d) in %.1f s", len(self.sizes), self.max_batch,
                 time.perf_counter() - began)

    def replay(self, chunks: Sequence[Chunk], rows: list[int], input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states [n, hidden] of a step of ``n`` one-token decodes (tokens from ``input_ids``,
        on the device, when given)."""
        n = len(chunks)
        batch = next(s for s in self.sizes if s >= n)
        self._staging = buf = self._stagings[1] if self._staging is self._stagings[0] else self._stagings[0]
        positions = [c.start for c in chunks]
        ids = [0] * n if input_ids is not None else [c.seq.token_ids[c.start] for c in chunks]
        buf[:, :n] = torch.tensor([ids, positions, [c.seq.slots[c.start] for c in chunks], rows,
                                   [p + 1 for p in positions]])
        self._pad(n, batch)
        self.inputs[:, :batch].copy_(buf[:, :batch], non_blocking=True)
        if input_ids is not None:
            self.inputs[IDS, :n].copy_(input_ids)
        self._graphs[batch].replay()
        return self._hidden[batch][:n]
