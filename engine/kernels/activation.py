"""The gated MLP's activation on the GPU, ``silu(gate) * up``: one Triton kernel, its launcher, a thin
public function.

The math, for each row ``t`` of the fused gate/up projection ``[T, 2I]`` (gate in columns ``[0, I)``,
up in ``[I, 2I)``) and each column ``j < I``, every step rounded as torch rounds it (``dtype`` is the
input's dtype; "round" means a cast of a float32 value to ``dtype``)::

    s         = round(g / (1 + exp(-g)))        g = gate[t, j] in float32  (F.silu, rounded)
    out[t, j] = round(s * up[t, j])             the multiply in float32

Program ``(t, b)`` computes columns ``[b * BLOCK, (b + 1) * BLOCK)`` of row ``t``. The input may be a
row-strided view (columns contiguous); the output is a new contiguous ``[T, I]`` tensor.

This module imports Triton at import time, so it is imported lazily, on CUDA only; under
``TRITON_INTERPRET=1`` (set before this import) the same kernel runs on CPU tensors, which is how
``tests/test_fused_kernels.py`` checks it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["silu_and_mul"]

BLOCK = 1024
"""Output columns per program (fewer for a narrower row): 14 programs per row for I = 14336."""

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@triton.jit
def _silu_and_mul_kernel(
    gate_up_ptr,  # *dtype [T, 2I]: gate then up in each row (columns contiguous)
    out_ptr,  # *dtype [T, I], contiguous
    inter,  # I: output columns
    gate_up_stride,  # elements between consecutive gate_up rows
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK] output columns
    mask = cols < inter
    dtype = gate_up_ptr.dtype.element_ty
    base = gate_up_ptr + row * gate_up_stride
    gate = tl.load(base + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(base + inter + cols, mask=mask, other=0.0).to(tl.float32)
    # out = round(round(silu(gate)) * up): torch rounds silu's result before the multiply.
    silu = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)
    tl.store(out_ptr + row * inter + cols, (silu * up).to(dtype), mask=mask)


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up [T, 2I] (float32/bfloat16/float16, columns contiguous) → silu(gate) * up, [T, I]."""
    if gate_up.dim() != 2 or gate_up.dtype not in _DTYPES or gate_up.shape[1] % 2:
        raise ValueError(f"gate_up must be a float32/bfloat16/float16 tensor [T, 2I], "
                         f"got {gate_up.dtype} {tuple(gate_up.shape)}")
    if gate_up.stride(1) != 1:
        raise ValueError(f"gate_up's columns must be contiguous (stride(1) == 1), got strides {gate_up.stride()}")
    tokens, inter = gate_up.shape[0], gate_up.shape[1] // 2
    out = torch.empty((tokens, inter), dtype=gate_up.dtype, device=gate_up.device)  # [T, I]
    if tokens == 0 or inter == 0:
        return out
    block = min(BLOCK, triton.next_power_of_2(inter))
    grid = (tokens, triton.cdiv(inter, block))
    _silu_and_mul_kernel[grid](gate_up, out, inter, gate_up.stride(0), BLOCK=block, num_warps=4)
    return out
