"""Small-batch projections on the GPU: ``y = a @ W.T (+ bias)`` for at most ``MAX_ROWS`` rows, with the
operation that makes ``a`` fused into the kernel's prologue, so a decoder layer's small kernels
disappear into its projections. One Triton kernel, its launcher, a public function.

Prologues (``a`` is computed chunk by chunk as the weight streams past; "round" is a cast of a
float32 value to the inputs' dtype, in the order ``norm.py`` and ``activation.py`` round)::

    none          a = x
    rms_norm      a = round(w_norm * round(x * rsqrt(mean(x²) + eps)))
    add_rms_norm  r = round(x + residual); a = rms_norm(r), and r is written out (the new residual stream)
    silu_mul      a = round(round(silu(gate)) * up), with x = [gate | up] of width 2K

At batch 1 a decode step is bound by reading the weights; what costs besides is the launches of the
small kernels between the projections (two RMSNorms and SiLU·mul per layer, each a few microseconds
however little it does). Each program reads ``BLOCK_N`` rows of ``W`` once, for all rows of ``a`` at once
(padded to 16, the rows of one ``tl.dot``); a norm prologue first sums the squares of its input rows
(``K`` values per row, next to ``BLOCK_N * K`` weights). On the GPU the block sizes are autotuned per
shape on first use; CUDA-graph capture warms every batch size up first, so tuning never runs inside
a capture.

This module imports Triton at import time, so it is imported lazily (``engine.model.llama`` does, when
``EngineConfig.fused_gemv`` is on); under ``TRITON_INTERPRET=1`` the same kernel runs on CPU tensors,
which is how ``tests/test_gemv_kernel.py`` checks it.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
import triton
import triton.language as tl

__all__ = ["MAX_ROWS", "Prologue", "gemv"]

_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
MAX_ROWS = 16
"""Most rows of ``a`` (tokens of a step) the kernel takes: one ``tl.dot`` tile."""
Prologue = Literal["none", "rms_norm", "add_rms_norm", "silu_mul"]
_PROLOGUES = {"none": 0, "rms_norm": 1, "add_rms_norm": 2, "silu_mul": 3}
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@triton.jit
def _gemv_kernel(
    x_ptr,  # [M, K] (or [M, 2K] for silu_mul), columns contiguous
    residual_ptr,  # [M, K] (add_rms_norm)
    norm_w_ptr,  # [K] (rms_norm, add_rms_norm)
    w_ptr,  # [N, K] row-major: the projection's weight, as nn.Linear stores it
    bias_ptr,  # [N] (HAS_BIAS)
    y_ptr,  # [M, N] contiguous
    new_residual_ptr,  # [M, K] contiguous (add_rms_norm; written by program 0)
    M, N,
    x_stride, residual_stride, w_stride,
    eps,
    K: tl.constexpr,  # a constant: static loops (the interpreter's range() wants ints; the GPU pipelines them)
    PROLOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
    M_PAD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = tl.arange(0, M_PAD)
    row_ok = rows < M
    cols = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    dtype = x_ptr.dtype.element_ty
    x_rows = x_ptr + rows[:, None].to(tl.int64) * x_stride

    inv = tl.zeros([M_PAD], tl.float32)
    if PROLOGUE == 1 or PROLOGUE == 2:  # the rows' mean square, over all K columns
        squares = tl.zeros([M_PAD], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            ok = row_ok[:, None] & (k < K)[None, :]
            r = tl.load(x_rows + k[None, :], mask=ok, other=0.0)
            if PROLOGUE == 2:
                res = tl.load(residual_ptr + rows[:, None].to(tl.int64) * residual_stride + k[None, :], mask=ok,
                              other=0.0)
                r = (r.to(tl.float32) + res.to(tl.float32)).to(dtype)
                if pid == 0:
                    tl.store(new_residual_ptr + rows[:, None].to(tl.int64) * K + k[None, :], r, mask=ok)
            rf = r.to(tl.float32)
            squares += tl.sum(rf * rf, 1)
        inv = tl.rsqrt(squares / K + eps)

    acc = tl.zeros([M_PAD, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_ok = k < K
        ok = row_ok[:, None] & k_ok[None, :]
        if PROLOGUE == 3:
            gate = tl.load(x_rows + k[None, :], mask=ok, other=0.0).to(tl.float32)
            up = tl.load(x_rows + K + k[None, :], mask=ok, other=0.0).to(tl.float32)
            silu = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)
            a = (silu * up).to(dtype)
        elif PROLOGUE == 1 or PROLOGUE == 2:
            r = tl.load(x_rows + k[None, :], mask=ok, other=0.0)
            if PROLOGUE == 2:
                res = tl.load(residual_ptr + rows[:, None].to(tl.int64) * residual_stride + k[None, :], mask=ok,
                              other=0.0)
                r = (r.to(tl.float32) + res.to(tl.float32)).to(dtype)
            h = (r.to(tl.float32) * inv[:, None]).to(dtype).to(tl.float32)
            nw = tl.load(norm_w_ptr + k, mask=k_ok, other=0.0).to(tl.float32)
            a = (nw[None, :] * h).to(dtype)
        else:
            a = tl.load(x_rows + k[None, :], mask=ok, other=0.0)
        w = tl.load(w_ptr + cols[:, None].to(tl.int64) * w_stride + k[None, :], mask=col_ok[:, None] & k_ok[None, :],
                    other=0.0)  # [BLOCK_N, BLOCK_K]
        if IEEE:  # float32 weights (or the interpreter, whose bfloat16 dot is wrong): exact float32 dots
            acc += tl.dot(a.to(tl.float32), tl.trans(w.to(tl.float32)), input_precision="ieee")
        else:
            acc += tl.dot(a, tl.trans(w))
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows[:, None].to(tl.int64) * N + cols[None, :], acc.to(dtype),
             mask=row_ok[:, None] & col_ok[None, :])


_CONFIGS = [triton.Config({"BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
            for n, k, w, s in ((16, 256, 4, 3), (16, 512, 4, 3), (32, 256, 4, 3), (32, 128, 4, 4), (32, 512, 8, 3),
                               (64, 128, 4, 3), (64, 256, 8, 3), (16, 1024, 8, 2))]
_launch = _gemv_kernel if _INTERPRETED else triton.autotune(
    _CONFIGS, key=["N", "K", "M_PAD", "PROLOGUE", "HAS_BIAS", "IEEE"])(_gemv_kernel)


def gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, prologue: Prologue = "none",
         residual: torch.Tensor | None = None, norm_weight: torch.Tensor | None = None,
         eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(y, new_residual)``: y [M, N] = a @ weight.T (+ bias) with ``a`` made from ``x`` by ``prologue``
    (see the module doc); ``new_residual`` = round(x + residual) for ``add_rms_norm``, else None.

    x [M, K] ([M, 2K] for ``silu_mul``), M <= ``MAX_ROWS``, columns contiguous; weight [N, K]
    contiguous, bias [N], norm_weight [K], residual like x; one dtype (float32/bfloat16/float16).
    """
    if prologue not in _PROLOGUES:
        raise ValueError(f"prologue must be one of {sorted(_PROLOGUES)}, got {prologue!r}")
    if x.dim() != 2 or weight.dim() != 2 or x.dtype not in _DTYPES:
        raise ValueError(f"need x [M, K] and weight [N, K] of float32/bfloat16/float16, got {x.dtype} "
                         f"{tuple(x.shape)} and {weight.dtype} {tuple(weight.shape)}")
    rows, width = x.shape
    n, k = weight.shape
    if width != (2 * k if prologue == "silu_mul" else k):
        raise ValueError(f"x is {tuple(x.shape)}: {prologue} needs {'2K' if prologue == 'silu_mul' else 'K'} "
                         f"columns for weight {tuple(weight.shape)}")
    if rows > MAX_ROWS:
        raise ValueError(f"gemv takes at most {MAX_ROWS} rows, got {rows}")
    if weight.dtype != x.dtype or weight.device != x.device or not weight.is_contiguous() or x.stride(1) != 1:
        raise ValueError("x (columns contiguous) and weight (contiguous) must share a dtype and device")
    for name, t, shape in (("bias", bias, (n,)), ("norm_weight", norm_weight, (k,)), ("residual", residual, (rows, k))):
        if t is not None and (t.shape != shape or t.dtype != x.dtype or t.device != x.device or t.stride(-1) != 1):
            raise ValueError(f"{name} must be {x.dtype} {shape} on {x.device}, got {t.dtype} {tuple(t.shape)}")
    if prologue in ("rms_norm", "add_rms_norm") and norm_weight is None:
        raise ValueError(f"prologue {prologue} needs norm_weight")
    if (prologue == "add_rms_norm") != (residual is not None):
        raise ValueError("residual is given exactly with prologue add_rms_norm")
    y = torch.empty((rows, n), dtype=x.dtype, device=x.device)
    new_residual = torch.empty((rows, k), dtype=x.dtype, device=x.device) if residual is not None else None
    if rows == 0 or n == 0:
        return y, new_residual
    fixed = {"BLOCK_N": 32, "BLOCK_K": 64} if _launch is _gemv_kernel else {}

    def grid(meta: dict[str, int]) -> tuple[int]:
        return (triton.cdiv(n, meta["BLOCK_N"]),)

    _launch[grid](
        x, residual if residual is not None else x, norm_weight if norm_weight is not None else weight, weight,
        bias if bias is not None else weight, y, new_residual if new_residual is not None else y,
        rows, n, x.stride(0), residual.stride(0) if residual is not None else 0, weight.stride(0), eps, K=k,
        PROLOGUE=_PROLOGUES[prologue], HAS_BIAS=bias is not None,
        IEEE=x.dtype == torch.float32 or _INTERPRETED, M_PAD=16, **fixed)
    return y, new_residual
