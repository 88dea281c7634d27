"""Paged attention in plain torch: the reference every kernel is tested against, and the CPU path.

    o_i = softmax(q_i · K_ctx^T * scale + mask_i) · V_ctx

with K_ctx, V_ctx gathered from the pool by slot, grouped-query heads shared (``enable_gqa``),
and the mask causal (plus a sliding window where the layer has one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.attention.metadata import AttentionMetadata


def write_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """k, v [T, kv_heads, head_dim] into caches [slots, kv_heads, head_dim] at ``slot_mapping``."""
    k_cache[slot_mapping] = k
    v_cache[slot_mapping] = v


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    meta: AttentionMetadata, *, scale: float, window: int | None) -> torch.Tensor:
    """q [T, heads, head_dim] → o [T, heads, head_dim]. The step's K/V must already be written."""
    out = torch.empty_like(q)
    if meta.decode is not None:
        d = meta.decode
        out[d.rows] = decode_attention(q[d.rows], k_cache, v_cache, meta, scale=scale, window=window)
    prefill_attention(q, k_cache, v_cache, meta, out, scale=scale, window=window)
    return out


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                     *, scale: float, window: int | None) -> torch.Tensor:
    """The decode group's queries q [B, heads, head_dim] → o [B, heads, head_dim]."""
    slots = meta.decode_slots()  # [B, L]
    kd = k_cache[slots].transpose(1, 2)  # [B, kv_heads, L, D]
    vd = v_cache[slots].transpose(1, 2)
    od = F.scaled_dot_product_attention(q.unsqueeze(2), kd, vd, attn_mask=meta.decode_mask(window),
                                        scale=scale, enable_gqa=True)
    return od.squeeze(2)


def prefill_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                      out: torch.Tensor, *, scale: float, window: int | None) -> None:
    """Each prefill chunk's rows of ``out``: causal attention over its cached prefix and itself."""
    for i, p in enumerate(meta.prefills):
        qp = q[p.row_start:p.row_start + p.length].transpose(0, 1)  # [heads, n, D]
        kp = k_cache[p.slots].transpose(0, 1)  # [kv_heads, ctx, D]
        vp = v_cache[p.slots].transpose(0, 1)
        mask = meta.prefill_mask(i, window)
        op = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask, is_causal=mask is None,
                                            scale=scale, enable_gqa=True)
        out[p.row_start:p.row_start + p.length] = op.transpose(0, 1)
