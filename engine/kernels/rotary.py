"""Rotary position embedding fused with the KV-cache write: one Triton kernel, its launcher, a thin
public function.

The math (the rotate-half convention of Llama checkpoints in HF format, as ``engine.model.rope``),
for token ``t`` at position ``p = positions[t]`` and a head vector ``x = (x1, x2)`` of ``D`` values
split in halves, every step rounded as the torch code rounds it (``dtype`` is the tensors' dtype;
"round" means a cast of a float32 value to ``dtype``)::

    f      = float32(p) * inv_freq                              [D/2], float32
    c, s   = round(cos(f)), round(sin(f))
    out1   = round(round(x1 * c) + round(-x2 * s))
    out2   = round(round(x2 * c) + round(x1 * s))

Every query head of ``q[t]`` is rotated in place; every key head of ``k[t]`` is rotated into
``k_cache[slot_mapping[t]]`` and ``v[t]`` is copied to ``v_cache[slot_mapping[t]]``; k and v are
only read. Program ``t`` handles all heads of token ``t`` as ``[heads, D/2]`` tiles (heads padded
to a power of two), so cos/sin are computed once per token.
q, k and v may be strided views (typically of one fused qkv projection ``[T, (H + 2 KVH) D]``)
with each head's values contiguous.

The kernel is compiled without fp fusion: an fma would skip the rounding of ``x1 * c`` before the
sum, and disagree with torch in about a quarter of bfloat16 outputs. Compiled so, the result is
bit-equal to the torch code on an H100, in float32, bfloat16 and float16.

``tl.cos``/``tl.sin`` are accurate at the large angles of long contexts: on an H100, for angles up
to 1.3e5 rad, they were within 1e-7 of float64 and rounded to the same bfloat16 as ``torch.cos``.

This module imports Triton at import time, so it is imported lazily, on CUDA only; under
``TRITON_INTERPRET=1`` (set before this import) the same kernel runs on CPU tensors, which is how
``tests/test_fused_kernels.py`` checks it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["rotary_store_kv"]

HEAD_DIMS = (16, 32, 64, 128, 256, 512)
"""Supported head sizes: powers of two (each half-head is one block row)."""

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@triton.jit
def _rotate(x1, x2, cos, sin, dtype: tl.constexpr):
    """x * cos + rotate_half(x) * sin for halves x1, x2 (float32), rotate_half(x) = (-x2, x1): each
    product and each sum rounded to ``dtype``. Returns the two rotated halves in ``dtype``."""
    out1 = (x1 * cos).to(dtype).to(tl.float32) + (-x2 * sin).to(dtype).to(tl.float32)
    out2 = (x2 * cos).to(dtype).to(tl.float32) + (x1 * sin).to(dtype).to(tl.float32)
    return out1.to(dtype), out2.to(dtype)


@triton.jit
def _rotary_store_kv_kernel(
    q_ptr,  # *dtype [T, H, D]: rotated in place (each head contiguous)
    k_ptr,  # *dtype [T, KVH, D]: read only (each head contiguous)
    v_ptr,  # *dtype [T, KVH, D]: read only (each head contiguous)
    positions_ptr,  # *int32/int64 [T]: each token's position
    inv_freq_ptr,  # *float32 [D/2]: rotary frequencies
    k_cache_ptr,  # *dtype [S, KVH, D], contiguous: receives the rotated k at slot_mapping[t]
    v_cache_ptr,  # *dtype [S, KVH, D], contiguous: receives v at slot_mapping[t]
    slot_mapping_ptr,  # *int32/int64 [T]: each token's cache row
    q_stride_t, q_stride_h,  # elements between q's tokens, heads
    k_stride_t, k_stride_h,  # elements between k's tokens, heads
    v_stride_t, v_stride_h,  # elements between v's tokens, heads
    heads,  # H: query heads
    kv_heads,  # KVH: key/value heads
    HEADS_PAD: tl.constexpr,  # next_power_of_2(H)
    KV_PAD: tl.constexpr,  # next_power_of_2(KVH)
    HALF: tl.constexpr,  # D / 2
):
    t = tl.program_id(0).to(tl.int64)  # one token: all its heads, so cos/sin are computed once
    dtype = q_ptr.dtype.element_ty
    i = tl.arange(0, HALF)[None, :]  # [1, D/2] position within a half
    # f = float32(p) * inv_freq; c, s = round(cos f), round(sin f), used in float32 from here.
    freqs = tl.load(positions_ptr + t).to(tl.float32) * tl.load(inv_freq_ptr + i)  # [1, D/2]
    cos = tl.cos(freqs).to(dtype).to(tl.float32)
    sin = tl.sin(freqs).to(dtype).to(tl.float32)

    # q[t, h] for every query head h, in place: both halves are loaded before either is stored.
    h = tl.arange(0, HEADS_PAD)[:, None]  # [HEADS_PAD, 1]
    q_first = q_ptr + t * q_stride_t + h * q_stride_h + i  # [HEADS_PAD, D/2] first halves
    q_mask = (h < heads) & (i < HALF)
    x1 = tl.load(q_first, mask=q_mask, other=0.0).to(tl.float32)
    x2 = tl.load(q_first + HALF, mask=q_mask, other=0.0).to(tl.float32)
    out1, out2 = _rotate(x1, x2, cos, sin, dtype)
    tl.store(q_first, out1, mask=q_mask)
    tl.store(q_first + HALF, out2, mask=q_mask)

    # k[t, g] rotated into k_cache[slot, g], v[t, g] copied to v_cache[slot, g], for every KV head g.
    g = tl.arange(0, KV_PAD)[:, None]  # [KV_PAD, 1]
    kv_mask = (g < kv_heads) & (i < HALF)
    cache_first = tl.load(slot_mapping_ptr + t).to(tl.int64) * kv_heads * (2 * HALF) + g * (2 * HALF) + i
    k_first = k_ptr + t * k_stride_t + g * k_stride_h + i
    x1 = tl.load(k_first, mask=kv_mask, other=0.0).to(tl.float32)
    x2 = tl.load(k_first + HALF, mask=kv_mask, other=0.0).to(tl.float32)
    out1, out2 = _rotate(x1, x2, cos, sin, dtype)
    tl.store(k_cache_ptr + cache_first, out1, mask=kv_mask)
    tl.store(k_cache_ptr + cache_first + HALF, out2, mask=kv_mask)
    v_first = v_ptr + t * v_stride_t + g * v_stride_h + i
    tl.store(v_cache_ptr + cache_first, tl.load(v_first, mask=kv_mask), mask=kv_mask)
    tl.store(v_cache_ptr + cache_first + HALF, tl.load(v_first + HALF, mask=kv_mask), mask=kv_mask)


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor,
           k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    if q.dim() != 3 or k.dim() != 3 or q.dtype not in _DTYPES:
        raise ValueError(f"q must be a float32/bfloat16/float16 tensor [T, H, D] and k [T, KVH, D], "
                         f"got q {q.dtype} {tuple(q.shape)}, k {tuple(k.shape)}")
    tokens, _, dim = q.shape
    kv_shape = (tokens, k.shape[1], dim)
    if k.shape != kv_shape or v.shape != kv_shape:
        raise ValueError(f"k and v must be [T, KVH, D] = {kv_shape} (T and D from q), "
                         f"got k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[1] == 0 or k.shape[1] == 0:
        raise ValueError(f"need at least one query and one KV head, got q {tuple(q.shape)}, k {tuple(k.shape)}")
    if dim not in HEAD_DIMS:
        raise ValueError(f"head dim (q.shape[2]) must be one of {HEAD_DIMS}, got {dim}")
    if k_cache.dim() != 3 or k_cache.shape[1:] != kv_shape[1:] or v_cache.shape != k_cache.shape:
        raise ValueError(f"k_cache and v_cache must both be [S, {kv_shape[1]}, {dim}], "
                         f"got {tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    for name, t in (("k", k), ("v", v), ("k_cache", k_cache), ("v_cache", v_cache)):
        if t.dtype != q.dtype:
            raise ValueError(f"{name} must be {q.dtype} like q, got {t.dtype}")
    if q.stride(2) != 1 or k.stride(2) != 1 or v.stride(2) != 1:
        raise ValueError(f"each head of q, k, v must be contiguous (stride(2) == 1), "
                         f"got strides {q.stride()}, {k.stride()}, {v.stride()}")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("k_cache and v_cache must be contiguous")
    for name, t in (("positions", positions), ("slot_mapping", slot_mapping)):
        if t.shape != (tokens,) or t.dtype not in (torch.int32, torch.int64) or not t.is_contiguous():
            raise ValueError(f"{name} must be a contiguous int64/int32 tensor [{tokens}], "
                             f"got {t.dtype} {tuple(t.shape)}")
    if inv_freq.shape != (dim // 2,) or inv_freq.dtype != torch.float32 or not inv_freq.is_contiguous():
        raise ValueError(f"inv_freq must be a contiguous float32 tensor [{dim // 2}], "
                         f"got {inv_freq.dtype} {tuple(inv_freq.shape)}")
    named = (("k", k), ("v", v), ("positions", positions), ("inv_freq", inv_freq), ("k_cache", k_cache),
             ("v_cache", v_cache), ("slot_mapping", slot_mapping))
    for name, t in named:
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device}, q on {q.device}")


def rotary_store_kv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor,
                    inv_freq: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    slot_mapping: torch.Tensor) -> None:
    """Rotate q [T, H, D] in place; write rotated k [T, KVH, D] and v into the caches [S, KVH, D] at
    ``slot_mapping`` [T].

    positions, slot_mapping: int64 (or int32) [T]; inv_freq: float32 [D/2]; q, k, v and the caches
    share one float dtype and device. Slots must lie in ``[0, S)`` (not checked: that would sync).
    """
    _check(q, k, v, positions, inv_freq, k_cache, v_cache, slot_mapping)
    tokens, heads, dim = q.shape
    kv_heads = k.shape[1]
    if tokens == 0:
        return
    heads_pad = triton.next_power_of_2(heads)
    _rotary_store_kv_kernel[(tokens,)](
        q, k, v, positions, inv_freq, k_cache, v_cache, slot_mapping,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), heads, kv_heads,
        HEADS_PAD=heads_pad, KV_PAD=triton.next_power_of_2(kv_heads), HALF=dim // 2,
        num_warps=4 if heads_pad * dim <= 4096 else 8,
        enable_fp_fusion=False,  # keep each product rounded to dtype before the sum: no fma, as in torch
    )
