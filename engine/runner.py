"""The model runner: turns a scheduled step into tensors, runs the forward pass, returns logits.

It is the one place that builds the per-step attention metadata; layers only read it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from engine.attention import build_metadata
from engine.kv_cache import KVPool
from engine.model.llama import LlamaForCausalLM
from engine.scheduler import Chunk


class ModelRunner:
    def __init__(self, model: LlamaForCausalLM, kv: KVPool, device: torch.device) -> None:
        self.model = model
        self.kv = kv
        self.device = device
        # The pad slot is read (masked out) by padded decode rows: keep it finite.
        for layer in range(len(kv.k)):
            kv.k[layer][kv.pad_slot].zero_()
            kv.v[layer][kv.pad_slot].zero_()

    @torch.inference_mode()
    def forward(self, chunks: Sequence[Chunk], *, all_logits: bool = False) -> torch.Tensor:
        """Run the step. Returns float32 logits [n_sample, vocab] for the chunks that sample, in
        order (or [T, vocab] for every token when ``all_logits``)."""
        ids: list[int] = []
        positions: list[int] = []
        meta_chunks = []
        sample_rows: list[int] = []
        for c in chunks:
            end = c.start + c.length
            ids.extend(c.seq.token_ids[c.start:end])
            positions.extend(range(c.start, end))
            meta_chunks.append((c.start, c.length, c.seq.slots[:end]))
            if c.sample:
                sample_rows.append(len(ids) - 1)
        input_ids = torch.tensor(ids, dtype=torch.long, device=self.device)
        pos = torch.tensor(positions, dtype=torch.long, device=self.device)
        meta = build_metadata(meta_chunks, self.kv.pad_slot, self.device)
        hidden = self.model(input_ids, pos, meta, self.kv)  # [T, hidden]
        if not all_logits:
            hidden = hidden[torch.tensor(sample_rows, dtype=torch.long, device=self.device)]
        return self.model.compute_logits(hidden)
