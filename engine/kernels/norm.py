"""RMS normalization on the GPU, alone or fused with the residual add: one Triton kernel, its launcher,
two thin public functions.

The math, for each row ``t`` of ``D`` columns, every step rounded as the model's torch code rounds it
(``dtype`` is the inputs' dtype; "round" means a cast of a float32 value to ``dtype``)::

    r[t]   = round(x[t] + residual[t])                      (fused_add_rms_norm only; else r = x)
    h      = r[t] (float32) * rsqrt(mean_j(r[t, j]²) + eps)
    out[t] = round(weight * round(h))

``fused_add_rms_norm`` returns ``(out, r)``: the next sublayer's input and the new residual stream.
One program normalizes one row, all of it in one block (``BLOCK = next_power_of_2(D)``, the tail
masked). Inputs may be row-strided views (columns contiguous); outputs are new contiguous tensors,
and the inputs are never written.

This module imports Triton at import time, so it is imported lazily, on CUDA only; under
``TRITON_INTERPRET=1`` (set before this import) the same kernel runs on CPU tensors, which is how
``tests/test_fused_kernels.py`` checks it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["fused_add_rms_norm", "rms_norm"]

MAX_DIM = 16384
"""Longest row: the whole row lives in one program's registers."""

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@triton.jit
def _rms_norm_kernel(
    x_ptr,  # *dtype [T, D]: input rows (columns contiguous)
    residual_ptr,  # *dtype [T, D]: residual rows, read only when HAS_RESIDUAL (columns contiguous)
    weight_ptr,  # *dtype [D]: the norm's scale
    out_ptr,  # *dtype [T, D], contiguous: the normalized rows
    new_residual_ptr,  # *dtype [T, D], contiguous: x + residual, written only when HAS_RESIDUAL
    dim,  # D: columns per row
    x_stride,  # elements between consecutive x rows
    residual_stride,  # elements between consecutive residual rows
    eps,  # added to the mean square before the rsqrt
    HAS_RESIDUAL: tl.constexpr,
    BLOCK: tl.constexpr,  # next_power_of_2(D)
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < dim
    dtype = x_ptr.dtype.element_ty
    r = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        # r = round(x + residual): the add in float32, rounded once, as torch adds two bf16 tensors.
        res = tl.load(residual_ptr + row * residual_stride + cols, mask=mask, other=0.0)
        r = (r.to(tl.float32) + res.to(tl.float32)).to(dtype)
        tl.store(new_residual_ptr + row * dim + cols, r, mask=mask)
    # h = r * rsqrt(mean(r²) + eps) in float32 (masked columns load 0 and add nothing to the sum).
    h = r.to(tl.float32)
    mean_square = tl.sum(h * h, axis=0) / dim
    h = h * tl.rsqrt(mean_square + eps)
    # out = round(weight * round(h)): torch casts h back to dtype before the weight multiply.
    weight = tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    out = weight * h.to(dtype).to(tl.float32)
    tl.store(out_ptr + row * dim + cols, out.to(dtype), mask=mask)


def _check_rows(name: str, t: torch.Tensor, like: torch.Tensor | None = None) -> None:
    """``t`` must be a float [T, D] tensor with contiguous columns (and match ``like``, when given)."""
    if t.dim() != 2 or t.dtype not in _DTYPES:
        raise ValueError(f"{name} must be a float32/bfloat16/float16 tensor [T, D], got {t.dtype} {tuple(t.shape)}")
    if t.stride(1) != 1:
        raise ValueError(f"{name}'s columns must be contiguous (stride(1) == 1), got strides {t.stride()}")
    if like is not None and (t.shape != like.shape or t.dtype != like.dtype or t.device != like.device):
        raise ValueError(f"{name} must match x: {like.dtype} {tuple(like.shape)} on {like.device}, "
                         f"got {t.dtype} {tuple(t.shape)} on {t.device}")
    if t.shape[1] > MAX_DIM:
        raise ValueError(f"{name} rows are {t.shape[1]} long; at most {MAX_DIM} are supported")


def _check_weight(weight: torch.Tensor, x: torch.Tensor) -> None:
    if weight.shape != (x.shape[1],) or weight.dtype != x.dtype or weight.device != x.device:
        raise ValueError(f"weight must be {x.dtype} [{x.shape[1]}] on {x.device}, "
                         f"got {weight.dtype} {tuple(weight.shape)} on {weight.device}")
    if not weight.is_contiguous():
        raise ValueError("weight must be contiguous")


def _launch(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float,
            out: torch.Tensor, new_residual: torch.Tensor | None) -> None:
    tokens, dim = x.shape
    if tokens == 0 or dim == 0:
        return
    block = triton.next_power_of_2(dim)
    _rms_norm_kernel[(tokens,)](
        x, residual if residual is not None else x, weight, out, new_residual if new_residual is not None else out,
        dim, x.stride(0), residual.stride(0) if residual is not None else 0, eps,
        HAS_RESIDUAL=residual is not None, BLOCK=block, num_warps=max(1, min(16, block // 512)),
    )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [T, D] (float32/bfloat16/float16, columns contiguous), weight [D] of x's dtype → out [T, D]."""
    _check_rows("x", x)
    _check_weight(weight, x)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # [T, D]
    _launch(x, None, weight, eps, out, None)
    return out


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x, residual [T, D] (same dtype, columns contiguous), weight [D] → (rms_norm(x + residual), x + residual)."""
    _check_rows("x", x)
    _check_rows("residual", residual, like=x)
    _check_weight(weight, x)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # [T, D]
    new_residual = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # [T, D]
    _launch(x, residual, weight, eps, out, new_residual)
    return out, new_residual
