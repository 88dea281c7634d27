"""Paged extend (prefill) attention on the GPU: every prefill chunk of a step — new tokens of a
sequence whose earlier positions may already sit in the KV pool (a prefix-cache hit, or the
previous chunk of a long prompt) — in one Triton launch, reading K/V through the slot table.

For prefill chunk ``i`` (slot-table row ``r``, its first new token at position ``s0``, its rows of
``q``/``out`` starting at ``q0``), new token ``t`` (position ``p = s0 + t``) and query head ``h`` of KV
head ``g = h // group``::

    s_j        = scale * q[q0 + t, h] · K[table[r, j], g]          for j in [lo_p, p]
    o[q0 + t, h] = Σ_j softmax(s)_j · V[table[r, j], g]

where ``lo_p = 0``, or ``p - window + 1`` for a sliding-window layer: causal attention over the cached
prefix and the chunk itself. The step's K/V must already be written to the pool.

Program ``(block, h)`` takes ``BLOCK_M`` consecutive new tokens of one chunk (``block`` indexes a
host-built list of (chunk, query block) pairs, so chunks of any lengths share one grid) and one
query head, and runs an online softmax over the keys its rows can see, ``BLOCK_N`` at a time: from
the window start of its first row to its last row's position. The mask (causal, window) is applied
on every key block (``triton_softmax.attend_block``, shared with the decode kernel).

The torch path (``torch_ref.prefill_attention``: gather the context, then SDPA per chunk) stays the
default until the GPU benchmark shows which is faster (``EngineConfig.prefill_attention``). Under
``TRITON_INTERPRET=1`` the kernel runs on CPU tensors; ``tests/test_extend_kernel.py`` checks it
against float64 math that way, and runs the demo model's engine with it against the torch path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from engine.attention.triton_softmax import attend_block

__all__ = ["BLOCK_M", "ExtendPlan", "extend_attention", "extend_plan"]

_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
"""Triton's CPU interpreter computes ``tl.dot`` of bfloat16 operands as integers: upcast there."""
BLOCK_M = 64
"""New tokens per program."""
BLOCK_N = 64
"""Context tokens per inner step under the interpreter (tuned on the GPU: ``_CONFIGS``)."""


@triton.jit
def _extend_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, table_ptr,
    plan_ptr,  # int32 [6, ...]: per block (chunk, query block), then per chunk (table row, q0, length, s0)
    blocks, chunks,
    q_stride_t, q_stride_h, o_stride_t, o_stride_h, kv_stride_s, kv_stride_h, table_stride,
    scale, window,  # window 0: the whole context
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IEEE: tl.constexpr, HAS_WINDOW: tl.constexpr,
):
    block = tl.program_id(0)
    h = tl.program_id(1)
    chunk = tl.load(plan_ptr + block)
    mb = tl.load(plan_ptr + blocks + block)
    per_chunk = plan_ptr + 2 * blocks
    row = tl.load(per_chunk + chunk).to(tl.int64)
    q0 = tl.load(per_chunk + chunks + chunk)
    length = tl.load(per_chunk + 2 * chunks + chunk)
    s0 = tl.load(per_chunk + 3 * chunks + chunk)

    m_idx = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = m_idx < length
    pos = s0 + m_idx  # [BLOCK_M] positions of the block's new tokens
    d = tl.arange(0, HEAD_DIM)
    rows = (q0 + m_idx).to(tl.int64)
    q = tl.load(q_ptr + rows[:, None] * q_stride_t + h * q_stride_h + d[None, :], mask=m_ok[:, None],
                other=0.0)  # [BLOCK_M, D]

    hi = s0 + tl.minimum(mb * BLOCK_M + BLOCK_M, length)  # one past the block's last position
    if HAS_WINDOW:
        lo = tl.maximum(s0 + mb * BLOCK_M - window + 1, 0)
    else:
        lo = hi * 0
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_sum = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    kv_base = (h // GROUP).to(tl.int64) * kv_stride_h
    start = lo
    while start < hi:  # a while loop: bounds loaded from memory (the interpreter's range() wants ints)
        n = start + tl.arange(0, BLOCK_N)
        n_ok = n < hi
        slots = tl.load(table_ptr + row * table_stride + n, mask=n_ok, other=0).to(tl.int64)
        offs = kv_base + slots[:, None] * kv_stride_s + d[None, :]
        k = tl.load(k_ptr + offs, mask=n_ok[:, None], other=0.0)  # [BLOCK_N, D]
        v = tl.load(v_ptr + offs, mask=n_ok[:, None], other=0.0)
        keep = n_ok[None, :] & (n[None, :] <= pos[:, None])
        if HAS_WINDOW:
            keep = keep & (n[None, :] > pos[:, None] - window)
        m, l_sum, acc = attend_block(q, k, v, keep, scale, m, l_sum, acc, IEEE=IEEE)
        start += BLOCK_N

    seen = l_sum > 0
    out = tl.where(seen[:, None], acc / tl.where(seen, l_sum, 1.0)[:, None], 0.0)
    tl.store(o_ptr + rows[:, None] * o_stride_t + h * o_stride_h + d[None, :], out.to(o_ptr.dtype.element_ty),
             mask=m_ok[:, None])


_CONFIGS = [triton.Config({"BLOCK_N": n}, num_warps=w, num_stages=st)
            for n, w, st in ((32, 4, 2), (64, 4, 2), (64, 4, 3), (64, 8, 2), (128, 4, 2), (128, 8, 2), (128, 8, 3))]
_launch = _extend_kernel if _INTERPRETED else triton.autotune(_CONFIGS, key=["HEAD_DIM", "GROUP", "IEEE",
                                                                            "HAS_WINDOW"])(_extend_kernel)
"""On the GPU, the key block size, warps and pipeline stages are tuned on first use per head shape (a
few hundred milliseconds, once per process); the interpreter runs ``BLOCK_N`` as it is."""


@dataclass(frozen=True)
class ExtendPlan:
    """One step's launch plan, shared by every layer: ``data`` (int32 on the device) holds, per program,
    its chunk and query block, then per chunk its table row, q0, length and s0."""

    data: torch.Tensor
    blocks: int
    chunks: int


def extend_plan(chunks: Sequence[tuple[int, int, int, int]], table: torch.Tensor, rows: int) -> ExtendPlan:
    """Check ``chunks`` = ``(q0, length, s0, table_row)`` per prefill chunk against ``rows`` query rows and
    the slot ``table``, and build their plan: one tensor, so one host-to-device copy per step."""
    block_chunk: list[int] = []
    block_index: list[int] = []
    for i, (q0, length, s0, table_row) in enumerate(chunks):
        if length < 1 or s0 < 0 or q0 < 0 or q0 + length > rows or not 0 <= table_row < table.shape[0] \
                or s0 + length > table.shape[1]:
            raise ValueError(f"chunk (q0={q0}, length={length}, s0={s0}, row={table_row}) does not fit "
                             f"q [{rows}] and table {tuple(table.shape)}")
        count = -(-length // BLOCK_M)
        block_chunk.extend([i] * count)
        block_index.extend(range(count))
    per_chunk = [[c[field] for c in chunks] for field in (3, 0, 1, 2)]  # table row, q0, length, s0
    flat = block_chunk + block_index + [value for column in per_chunk for value in column]
    return ExtendPlan(torch.tensor(flat, dtype=torch.int32).to(table.device, non_blocking=True), len(block_chunk),
                      len(chunks))


def extend_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, table: torch.Tensor,
                     plan: ExtendPlan, *, scale: float, window: int | None, out: torch.Tensor) -> torch.Tensor:
    """Write the prefill chunks' rows of ``out`` [T, H, D] from ``q`` [T, H, D] (head dim contiguous).

    ``plan``: from :func:`extend_plan` — per chunk, its rows ``q0 .. q0 + length - 1``, the position ``s0``
    of its first new token, and its slot-table row, which holds the slots of positions
    ``0 .. s0 + length - 1``. k_cache, v_cache: [slots, KVH, D]; table: int32 [R, W]. Other rows of
    ``out`` are left as they are.
    """
    if q.dim() != 3 or k_cache.dim() != 3 or v_cache.shape != k_cache.shape or out.shape != q.shape:
        raise ValueError(f"need q, out [T, H, D] and caches [S, KVH, D], got {tuple(q.shape)}, {tuple(out.shape)}, "
                         f"{tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    heads, dim = q.shape[1:]
    kv_heads = k_cache.shape[1]
    if k_cache.shape[2] != dim or heads % kv_heads:
        raise ValueError(f"{heads} query heads of dim {dim} do not group over KV heads {tuple(k_cache.shape[1:])}")
    if dim & (dim - 1) or dim < 16:
        raise ValueError(f"head_dim must be a power of two >= 16, got {dim}")
    if q.stride(2) != 1 or out.stride(2) != 1 or k_cache.stride(2) != 1 or v_cache.stride() != k_cache.stride():
        raise ValueError("q's, out's and the caches' head dim must be contiguous, and both caches laid out alike")
    if table.dtype != torch.int32 or table.stride(1) != 1:
        raise ValueError(f"table must be a row-major int32 tensor, got {table.dtype}")
    if not plan.blocks:
        return out
    fixed = {"BLOCK_N": BLOCK_N} if _launch is _extend_kernel else {}
    _launch[(plan.blocks, heads)](
        q, k_cache, v_cache, out, table, plan.data, plan.blocks, plan.chunks,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1), k_cache.stride(0), k_cache.stride(1),
        table.stride(0), scale, int(window or 0),
        GROUP=heads // kv_heads, HEAD_DIM=dim, BLOCK_M=BLOCK_M,
        IEEE=q.dtype == torch.float32 or _INTERPRETED, HAS_WINDOW=bool(window), **fixed)
    return out
