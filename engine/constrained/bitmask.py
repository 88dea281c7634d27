"""Apply a token bitmask to logits on the GPU: one Triton kernel, its launcher, a thin public function.

The math, for each masked row ``b`` (logits row ``r = indices[b]``, or ``b`` without indices) and
each column ``j < V``::

    logits[r, j] = -inf    where    (bitmask[b, j // 32] >> (j % 32)) & 1 == 0

Bit ``j`` of word ``w`` allows token ``32 * w + j`` (llguidance's and XGrammar's layout; bit 31 is
the sign bit of the int32 word). Columns past ``32 * W`` (a mask narrower than the logits) count as
disallowed. Allowed logits are not touched: the kernel only stores ``-inf``, it never reads logits.

The sampler calls this for CUDA logits and the torch version (``engine.sampling.apply_token_bitmask_``)
for CPU logits. This module imports Triton at import time, so it is imported lazily, on first use;
under ``TRITON_INTERPRET=1`` (set before this import) the same kernel runs on CPU tensors, which is
how ``tests/test_bitmask_kernel.py`` checks it against the torch version.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["apply_token_bitmask_triton_"]

BLOCK = 4096
"""Logit columns per program: 128 mask words; 38 programs per row for a 152k vocabulary."""


@triton.jit
def _apply_token_bitmask_kernel(
    logits_ptr,  # *float [R, V]: rows of logits, masked in place
    bitmask_ptr,  # *int32 [B, W]: one mask row per masked logits row
    indices_ptr,  # *int32/int64 [B]: the logits row of each mask row (read only when HAS_INDICES)
    vocab,  # V: logits columns to mask
    words,  # W: int32 words per mask row
    logits_stride,  # elements between consecutive logits rows (columns are contiguous)
    bitmask_stride,  # elements between consecutive mask rows (words are contiguous)
    HAS_INDICES: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(0)  # mask row
    block = tl.program_id(1)  # which BLOCK columns
    if HAS_INDICES:
        row = tl.load(indices_ptr + b).to(tl.int64)
    else:
        row = b.to(tl.int64)
    cols = block * BLOCK + tl.arange(0, BLOCK)  # [BLOCK] token ids
    word_index = cols // 32
    # Each word is gathered by its 32 columns; they hit the same cache line.
    word = tl.load(bitmask_ptr + b.to(tl.int64) * bitmask_stride + word_index, mask=word_index < words, other=0)
    allowed = (word >> (cols % 32)) & 1  # arithmetic shift: the sign bit reads as 1 too
    neg_inf = tl.full([BLOCK], float("-inf"), tl.float32)  # cast to the logits dtype by the store
    tl.store(logits_ptr + row * logits_stride + cols, neg_inf, mask=(cols < vocab) & (allowed == 0))


def apply_token_bitmask_triton_(logits: torch.Tensor, bitmask: torch.Tensor,
                                indices: torch.Tensor | None = None) -> None:
    """Set to -inf, in place, every logit whose bit is clear.

    logits: float [R, V] (any float dtype; columns contiguous). bitmask: int32 [B, W] on the same
    device (words contiguous). indices: [B] integer logits rows, one per mask row; without it
    B == R and mask row ``b`` masks logits row ``b``. Rows not named in ``indices`` are untouched.
    """
    if logits.dim() != 2 or bitmask.dim() != 2 or bitmask.dtype != torch.int32:
        raise ValueError(f"need float logits [R, V] and an int32 bitmask [B, W], got {tuple(logits.shape)} "
                         f"and {bitmask.dtype} {tuple(bitmask.shape)}")
    if logits.stride(1) != 1 or bitmask.stride(1) != 1:
        raise ValueError("logits columns and bitmask words must be contiguous")
    if bitmask.device != logits.device:
        raise ValueError(f"bitmask on {bitmask.device}, logits on {logits.device}")
    rows = bitmask.shape[0]
    if indices is None:
        if rows != logits.shape[0]:
            raise ValueError(f"{rows} mask rows for {logits.shape[0]} logits rows (pass indices)")
    elif indices.dim() != 1 or indices.numel() != rows or indices.device != logits.device:
        raise ValueError(f"indices must be [{rows}] on {logits.device}, got {tuple(indices.shape)} on {indices.device}")
    if rows == 0 or logits.shape[1] == 0:
        return
    vocab, words = logits.shape[1], bitmask.shape[1]
    grid = (rows, triton.cdiv(vocab, BLOCK))
    _apply_token_bitmask_kernel[grid](
        logits, bitmask, indices if indices is not None else bitmask,
        vocab, words, logits.stride(0), bitmask.stride(0),
        HAS_INDICES=indices is not None, BLOCK=BLOCK,
    )
