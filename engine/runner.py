"""The model runner: turns a scheduled step into tensors, runs the forward pass, returns logits.

It is the one place that builds the per-step attention metadata; layers only read it. It owns the
slot table (each sequence's context slots on the device) and, on CUDA, the decode CUDA graphs: a
step whose every chunk is a one-token decode, at a batch size the graphs cover, is replayed from a
graph instead of launched kernel by kernel (``engine/cuda_graph.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from engine.attention import SlotTable, build_metadata
from engine.kv_cache import KVPool
from engine.model.llama import LlamaForCausalLM
from engine.scheduler import Chunk

log = logging.getLogger(__name__)


class ModelRunner:
    def __init__(self, model: LlamaForCausalLM, kv: KVPool, device: torch.device, *, max_sequences: int,
                 max_context: int, cuda_graphs: bool = False, cuda_graph_max_batch: int = 256,
                 record_timeline: bool = False, prefill_attention: str = "sdpa") -> None:
        self.model = model
        self.prefill_attention = prefill_attention
        self.kv = kv
        self.device = device
        # The pad slot is read (masked out) by padded decode rows: keep it finite.
        for layer in range(len(kv.k)):
            kv.k[layer][kv.pad_slot].zero_()
            kv.v[layer][kv.pad_slot].zero_()
        # One row per running sequence, plus one for a scoring pass outside the batch.
        self.slot_table = SlotTable(max_sequences + 1, max_context + 1, kv.pad_slot, device)
        cfg = model.config
        self._kv_heads = cfg.num_kv_heads
        self._sm_count = (torch.cuda.get_device_properties(device).multi_processor_count
                          if device.type == "cuda" else 1)
        self.timeline = _Timeline() if record_timeline and device.type == "cuda" else None
        self.graphs = None
        if cuda_graphs and device.type == "cuda":
            from engine.cuda_graph import DecodeGraphs

            self.graphs = DecodeGraphs(self, min(cuda_graph_max_batch, max_sequences))
            self.graphs.capture()

    def splits(self, batch: int, max_length: int | None) -> int:
        if self.device.type != "cuda":
            return 1
        from engine.attention.triton_decode import default_splits

        return default_splits(batch, self._kv_heads, max_length, self._sm_count)

    def release(self, seq: object) -> None:
        """The sequence ended or was retracted: its slot-table row goes back."""
        self.slot_table.release(seq)

    @torch.inference_mode()
    def forward(self, chunks: Sequence[Chunk], *, all_logits: bool = False,
                input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Run the step. Returns float32 logits [n_sample, vocab] for the chunks that sample, in
        order (or [T, vocab] for every token when ``all_logits``).

        ``input_ids``: for a step of one-token decodes whose tokens the CPU does not know yet (run
        ahead: the previous step's samples, still on the device), the tokens in chunk order."""
        rows = self.slot_table.sync([(c.seq, c.seq.slots, c.start + c.length) for c in chunks])
        if input_ids is not None and (len(input_ids) != len(chunks) or any(c.length != 1 for c in chunks)):
            raise ValueError("input_ids replaces the tokens of one-token chunks only, one per chunk")
        if self.timeline is not None:
            self.timeline.begin()
        if (self.graphs is not None and not all_logits and self.graphs.covers(len(chunks))
                and all(c.length == 1 and c.sample for c in chunks)):
            hidden = self.graphs.replay(chunks, rows, input_ids)
        else:
            hidden = self._eager(chunks, rows, all_logits, input_ids)
        logits = self.model.compute_logits(hidden)
        if self.timeline is not None:
            self.timeline.end()
        return logits

    def _eager(self, chunks: Sequence[Chunk], rows: list[int], all_logits: bool,
               patch: torch.Tensor | None) -> torch.Tensor:
        ids: list[int] = []
        positions: list[int] = []
        meta_chunks = []
        sample_rows: list[int] = []
        decodes = 0
        for c, row in zip(chunks, rows, strict=True):
            end = c.start + c.length
            ids.extend(c.seq.token_ids[c.start:end])
            positions.extend(range(c.start, end))
            meta_chunks.append((c.start, c.length, row, c.seq.slots))
            decodes += c.length == 1
            if c.sample:
                sample_rows.append(len(ids) - 1)
        if patch is not None:
            input_ids = patch.to(device=self.device, dtype=torch.long)
        else:
            input_ids = torch.tensor(ids, dtype=torch.long, device=self.device)
        pos = torch.tensor(positions, dtype=torch.long, device=self.device)
        longest = max((c.start + 1 for c in chunks if c.length == 1), default=0)
        meta = build_metadata(meta_chunks, self.slot_table.table, self.device,
                              splits=self.splits(decodes, longest) if decodes else 1,
                              prefill_kernel=self.prefill_attention)
        hidden = self.model(input_ids, pos, meta, self.kv)  # [T, hidden]
        if not all_logits and len(sample_rows) != len(ids):
            hidden = hidden[torch.tensor(sample_rows, dtype=torch.long, device=self.device)]
        return hidden

    def gpu_idle_gaps(self) -> list[float]:
        """Seconds the GPU waited between consecutive forward passes (``record_timeline`` only)."""
        return self.timeline.gaps() if self.timeline is not None else []


class _Timeline:
    """CUDA events at the start and end of every forward pass; read (synchronising) on demand."""

    def __init__(self) -> None:
        self.events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._start: torch.cuda.Event | None = None

    def begin(self) -> None:
        self._start = torch.cuda.Event(enable_timing=True)
        self._start.record()

    def end(self) -> None:
        stop = torch.cuda.Event(enable_timing=True)
        stop.record()
        assert self._start is not None
        self.events.append((self._start, stop))

    def gaps(self) -> list[float]:
        torch.cuda.synchronize()
        return [prev_end.elapsed_time(start) / 1e3
                for (_, prev_end), (start, _) in zip(self.events, self.events[1:], strict=False)]
