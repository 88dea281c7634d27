"""Attention over the paged KV pool.

``torch_ref`` is the plain-torch implementation (the CPU path, and the reference for tests). On
CUDA the decode group goes through the Triton split-K kernel (``triton_decode``, imported on first
use); prefill chunks use torch's SDPA over the gathered context, or, with
``EngineConfig.prefill_attention="triton"`` (``meta.prefill_kernel``), the Triton extend kernel
(``triton_extend``: all chunks in one launch, also run on CPU under ``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import torch

from engine.attention.metadata import AttentionMetadata, build_metadata
from engine.attention.slot_table import SlotTable
from engine.attention.torch_ref import decode_attention as decode_attention_ref
from engine.attention.torch_ref import paged_attention as paged_attention_ref
from engine.attention.torch_ref import prefill_attention, write_kv

__all__ = ["AttentionMetadata", "SlotTable", "build_metadata", "paged_attention", "write_kv"]


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    meta: AttentionMetadata, *, scale: float, window: int | None) -> torch.Tensor:
    """q [T, heads, head_dim] → o [T, heads, head_dim]. The step's K/V must already be written."""
    extend = meta.prefill_kernel == "triton" and bool(meta.prefills)
    if not q.is_cuda and not extend:
        return paged_attention_ref(q, k_cache, v_cache, meta, scale=scale, window=window)
    d = meta.decode
    if d is not None and d.whole_step:
        from engine.attention.triton_decode import decode_attention

        return decode_attention(q, k_cache, v_cache, meta.table, d.seq_rows, d.lengths, scale=scale,
                                window=window, splits=d.splits)
    out = torch.empty_like(q)
    if d is not None:
        if q.is_cuda:
            from engine.attention.triton_decode import decode_attention

            out[d.rows] = decode_attention(q[d.rows], k_cache, v_cache, meta.table, d.seq_rows, d.lengths,
                                           scale=scale, window=window, splits=d.splits)
        else:
            out[d.rows] = decode_attention_ref(q[d.rows], k_cache, v_cache, meta, scale=scale, window=window)
    if extend:
        from engine.attention.triton_extend import extend_attention

        extend_attention(q, k_cache, v_cache, meta.table, meta.extend_plan(), scale=scale, window=window, out=out)
    else:
        prefill_attention(q, k_cache, v_cache, meta, out, scale=scale, window=window)
    return out
