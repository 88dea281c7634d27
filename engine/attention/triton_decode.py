"""Paged decode attention on the GPU: one query token per sequence against its whole context, read
from the KV pool through the slot table. Two Triton kernels (split-K "flash decoding") and a launcher.

For sequence ``b`` (slot-table row ``r = seq_rows[b]``, context length ``n = lengths[b]``, query
head ``h`` of KV head ``g = h // group``)::

    s_j   = scale * q[b, h] · K[table[r, j], g]          for j in [lo, n)
    o[b, h] = Σ_j softmax(s)_j · V[table[r, j], g]

where ``lo = 0``, or ``n - window`` for a sliding-window layer. The context is cut into ``splits``
equal spans; program ``(b, g, split)`` runs an online softmax over its span for all the query heads
of KV head ``g`` at once (GQA: K/V are read once per group, and the group's heads, padded to 16,
make the rows of one ``tl.dot``), and leaves its partial output and log-sum-exp. The second kernel
merges the spans: ``o = Σ_s exp(lse_s - max lse) o_s / Σ_s exp(lse_s - max lse)``. With one split the
first kernel writes the output directly.

Lengths are read on the GPU and the grid depends only on the batch size and ``splits``, so a launch
is capturable in a CUDA graph and replayable whatever the lengths. This module imports Triton at
import time: import it lazily (``engine.attention`` does, on CUDA). Under ``TRITON_INTERPRET=1`` the
same kernels run on CPU tensors; ``tests/test_attention_kernels.py`` checks them against the torch
reference that way.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from engine.attention.triton_softmax import attend_block

__all__ = ["decode_attention", "default_splits"]

_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
"""Triton's CPU interpreter computes ``tl.dot`` of bfloat16 operands as integers: upcast there."""
MAX_SPLITS = 16
BLOCK_N = 64
"""Context tokens per inner step."""


@triton.jit
def _decode_split_kernel(
    q_ptr, k_ptr, v_ptr, table_ptr, seq_rows_ptr, lengths_ptr,
    o_ptr,  # DIRECT: out [B, H, D] in q's dtype; else partial outputs float32 [B, H, SPLITS, D]
    lse_ptr,  # float32 [B, H, SPLITS] (unused when DIRECT)
    q_stride_b, q_stride_h,
    kv_stride_s, kv_stride_h,
    table_stride,
    o_stride_b, o_stride_h,
    scale, window,  # window 0: the whole context
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
    SPLITS: tl.constexpr, DIRECT: tl.constexpr, IEEE: tl.constexpr, HAS_WINDOW: tl.constexpr,
):
    b = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    row = tl.load(seq_rows_ptr + b).to(tl.int64)
    length = tl.load(lengths_ptr + b).to(tl.int32)
    if HAS_WINDOW:
        first = tl.maximum(length - window, 0)
    else:
        first = length * 0
    span = tl.cdiv(tl.cdiv(length - first, SPLITS), BLOCK_N) * BLOCK_N
    lo = first + split * span
    hi = tl.minimum(lo + span, length)

    g = tl.arange(0, GROUP_PAD)
    heads = kv_head * GROUP + g
    head_ok = g < GROUP
    d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + b.to(tl.int64) * q_stride_b + heads[:, None] * q_stride_h + d[None, :],
                mask=head_ok[:, None], other=0.0)  # [GROUP_PAD, D]

    m = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_sum = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
    kv_base = kv_head.to(tl.int64) * kv_stride_h
    start = lo
    while start < hi:  # a while loop: bounds loaded from memory (the interpreter's range() wants ints)
        n = start + tl.arange(0, BLOCK_N)
        n_ok = n < hi
        slots = tl.load(table_ptr + row * table_stride + n, mask=n_ok, other=0).to(tl.int64)
        offs = kv_base + slots[:, None] * kv_stride_s + d[None, :]
        k = tl.load(k_ptr + offs, mask=n_ok[:, None], other=0.0)  # [BLOCK_N, D]
        v = tl.load(v_ptr + offs, mask=n_ok[:, None], other=0.0)
        m, l_sum, acc = attend_block(q, k, v, n_ok[None, :], scale, m, l_sum, acc, IEEE=IEEE)
        start += BLOCK_N

    nonempty = l_sum > 0
    out = tl.where(nonempty[:, None], acc / tl.where(nonempty, l_sum, 1.0)[:, None], 0.0)
    if DIRECT:
        o_offs = b.to(tl.int64) * o_stride_b + heads[:, None] * o_stride_h + d[None, :]
        tl.store(o_ptr + o_offs, out.to(o_ptr.dtype.element_ty), mask=head_ok[:, None])
    else:
        bh = b.to(tl.int64) * tl.num_programs(1) * GROUP + heads  # [GROUP_PAD] index of (b, h)
        tl.store(o_ptr + (bh[:, None] * SPLITS + split) * HEAD_DIM + d[None, :], out, mask=head_ok[:, None])
        lse = tl.where(nonempty, m + tl.log(tl.where(nonempty, l_sum, 1.0)), float("-inf"))
        tl.store(lse_ptr + bh * SPLITS + split, lse, mask=head_ok)


@triton.jit
def _merge_splits_kernel(
    partial_ptr, lse_ptr, o_ptr, heads, o_stride_b, o_stride_h,
    HEAD_DIM: tl.constexpr, SPLITS: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    bh = b.to(tl.int64) * heads + h
    s = tl.arange(0, SPLITS)
    lse = tl.load(lse_ptr + bh * SPLITS + s)  # [SPLITS]
    top = tl.max(lse, 0)
    w = tl.where(lse > float("-inf"), tl.exp(lse - top), 0.0)
    d = tl.arange(0, HEAD_DIM)
    parts = tl.load(partial_ptr + (bh * SPLITS + s[:, None]) * HEAD_DIM + d[None, :])  # [SPLITS, D]
    out = tl.sum(parts * w[:, None], 0) / tl.sum(w, 0)
    tl.store(o_ptr + b.to(tl.int64) * o_stride_b + h * o_stride_h + d, out.to(o_ptr.dtype.element_ty))


def default_splits(batch: int, kv_heads: int, max_length: int | None, sm_count: int) -> int:
    """Enough programs to fill the GPU twice over; never more splits than ``BLOCK_N`` spans of the
    longest context (when it is known)."""
    splits = max(1, -(-2 * sm_count // max(1, batch * kv_heads)))
    if max_length is not None:
        splits = min(splits, max(1, -(-max_length // BLOCK_N)))
    return int(min(MAX_SPLITS, 1 << (splits - 1).bit_length()))  # a power of two: tl.arange needs one


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, table: torch.Tensor,
                     seq_rows: torch.Tensor, lengths: torch.Tensor, *, scale: float, window: int | None,
                     splits: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """q [B, H, D] (head dim contiguous) → o [B, H, D] in q's dtype.

    k_cache, v_cache: [slots, KVH, D]; table: int32 [R, W] context slots per table row; seq_rows:
    [B] table row per sequence; lengths: [B] context length per sequence (>= 1, the query is the
    last position). ``splits`` (a power of two <= 16) spans per context; see ``default_splits``.
    """
    if q.dim() != 3 or k_cache.dim() != 3 or v_cache.shape != k_cache.shape:
        raise ValueError(f"need q [B, H, D] and caches [S, KVH, D], got {tuple(q.shape)}, "
                         f"{tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    batch, heads, dim = q.shape
    kv_heads = k_cache.shape[1]
    if k_cache.shape[2] != dim or heads % kv_heads:
        raise ValueError(f"{heads} query heads of dim {dim} do not group over KV heads {tuple(k_cache.shape[1:])}")
    if dim & (dim - 1) or dim < 16:
        raise ValueError(f"head_dim must be a power of two >= 16, got {dim}")
    if splits < 1 or splits > MAX_SPLITS or splits & (splits - 1):
        raise ValueError(f"splits must be a power of two in [1, {MAX_SPLITS}], got {splits}")
    if q.stride(2) != 1 or k_cache.stride(2) != 1 or v_cache.stride() != k_cache.stride():
        raise ValueError("q's and the caches' head dim must be contiguous, and both caches laid out alike")
    if table.dtype != torch.int32 or table.stride(1) != 1:
        raise ValueError(f"table must be a row-major int32 tensor, got {table.dtype}")
    if seq_rows.shape != (batch,) or lengths.shape != (batch,):
        raise ValueError(f"seq_rows and lengths must be [{batch}], got {tuple(seq_rows.shape)}, {tuple(lengths.shape)}")
    if out is None:
        out = torch.empty_like(q)
    if batch == 0:
        return out
    group = heads // kv_heads
    common = dict(GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)), HEAD_DIM=dim,
                  BLOCK_N=BLOCK_N, SPLITS=splits, IEEE=q.dtype == torch.float32 or _INTERPRETED,
                  HAS_WINDOW=bool(window))
    window_ = int(window or 0)
    if splits == 1:
        _decode_split_kernel[(batch, kv_heads, 1)](
            q, k_cache, v_cache, table, seq_rows, lengths, out, out,
            q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), table.stride(0),
            out.stride(0), out.stride(1), scale, window_, DIRECT=True, **common)
        return out
    partial = torch.empty((batch, heads, splits, dim), dtype=torch.float32, device=q.device)
    lse = torch.empty((batch, heads, splits), dtype=torch.float32, device=q.device)
    _decode_split_kernel[(batch, kv_heads, splits)](
        q, k_cache, v_cache, table, seq_rows, lengths, partial, lse,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), table.stride(0),
        0, 0, scale, window_, DIRECT=False, **common)
    _merge_splits_kernel[(batch, heads)](partial, lse, out, heads, out.stride(0), out.stride(1),
                                         HEAD_DIM=dim, SPLITS=splits)
    return out
