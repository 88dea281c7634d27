"""The fused Triton kernels of ``engine/kernels/`` (RMS norm with and without the residual add, SiLU-and-
multiply, rotary embedding with the KV-cache write) against torch references, the kernels run by
Triton's interpreter on CPU.

As in ``tests/test_bitmask_kernel.py``, ``TRITON_INTERPRET`` must be set before a kernel module is
imported and must not leak into the session, so the cases run in one child process (``python -m
tests.test_fused_kernels``) and each test asserts one case's result.

Each case compares the kernel with two references: the torch code the model runs, in the case's
dtype with its roundings (``allclose`` within about one ulp), and the same math in float64 (relative
error ‖out − ref‖ / ‖ref‖). Inputs may be strided views; they must come back unchanged, and KV-cache
rows the slot mapping does not name must keep the NaN they were poisoned with.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from tests.interpreted import report, run_cases

CASES: dict[str, dict[str, Any]] = {
    # op, tokens, sizes (dim for norms, inter for silu, heads/kv/dim for rotary), dtype, layout
    "rms-fp32-d48-t7": {"op": "rms", "tokens": 7, "dim": 48},
    "rms-bf16-d256-t1": {"op": "rms", "tokens": 1, "dim": 256, "dtype": "bfloat16"},
    "rms-fp16-d48-strided": {"op": "rms", "tokens": 5, "dim": 48, "dtype": "float16", "strided": True},
    "add-rms-fp32-d48-t7-strided": {"op": "add_rms", "tokens": 7, "dim": 48, "strided": True},
    "add-rms-bf16-d256-strided": {"op": "add_rms", "tokens": 16, "dim": 256, "dtype": "bfloat16", "strided": True},
    "add-rms-fp16-d128-t1": {"op": "add_rms", "tokens": 1, "dim": 128, "dtype": "float16"},
    "silu-fp32-i344-t7": {"op": "silu", "tokens": 7, "inter": 344},
    "silu-bf16-i344-strided": {"op": "silu", "tokens": 5, "inter": 344, "dtype": "bfloat16", "strided": True},
    "silu-fp16-i512-t1": {"op": "silu", "tokens": 1, "inter": 512, "dtype": "float16"},
    "rope-fp32-gqa-4-2-d64-qkv": {"op": "rotary", "tokens": 7, "heads": 4, "kv": 2, "dim": 64, "layout": "qkv"},
    "rope-bf16-6-2-d128-qkv-pos30000": {"op": "rotary", "tokens": 16, "heads": 6, "kv": 2, "dim": 128,
                                        "dtype": "bfloat16", "layout": "qkv", "max_pos": 30_000},
    "rope-fp16-6-2-d64-qkv-t1": {"op": "rotary", "tokens": 1, "heads": 6, "kv": 2, "dim": 64, "dtype": "float16",
                                 "layout": "qkv"},
    "rope-fp32-12-3-d32-qkv": {"op": "rotary", "tokens": 9, "heads": 12, "kv": 3, "dim": 32, "layout": "qkv"},
    "rope-bf16-2-1-d256-contiguous": {"op": "rotary", "tokens": 3, "heads": 2, "kv": 1, "dim": 256,
                                      "dtype": "bfloat16", "layout": "contiguous"},
    "rope-fp32-4-4-d64-head-strided-int32": {"op": "rotary", "tokens": 5, "heads": 4, "kv": 4, "dim": 64,
                                             "layout": "head-strided", "index_dtype": "int32",
                                             "max_pos": 30_000},
    "empty-t0": {"op": "empty"},
    "rejects-bad-input": {"op": "reject"},
}
GPU_CASES: dict[str, dict[str, Any]] = {
    "rms-bf16-d4096": {"op": "rms", "tokens": 64, "dim": 4096, "dtype": "bfloat16", "strided": True},
    "add-rms-bf16-d4096": {"op": "add_rms", "tokens": 64, "dim": 4096, "dtype": "bfloat16", "strided": True},
    "add-rms-fp32-d8192": {"op": "add_rms", "tokens": 64, "dim": 8192},
    "silu-bf16-i14336": {"op": "silu", "tokens": 64, "inter": 14336, "dtype": "bfloat16"},
    "rope-bf16-32-8-d128-qkv": {"op": "rotary", "tokens": 64, "heads": 32, "kv": 8, "dim": 128, "dtype": "bfloat16",
                                "layout": "qkv", "max_pos": 30_000},
    "rope-fp32-32-8-d128-qkv": {"op": "rotary", "tokens": 64, "heads": 32, "kv": 8, "dim": 128, "layout": "qkv",
                                "max_pos": 30_000},
}
TOLERANCE = {"float32": (1e-5, 1e-5, 1e-5), "bfloat16": (2e-2, 2e-2, 1e-2), "float16": (2e-3, 2e-3, 2e-3)}
"""(atol, rtol) against the torch reference in the case's dtype, and the bound on the relative error
‖out − ref‖ / ‖ref‖ against float64."""
EPS = 1e-6


def _compare(label: str, got: Any, same_rounding: Any, exact: Any, dtype: str) -> str:
    """'' when ``got`` matches the dtype reference within (atol, rtol) and float64 within the relative bound."""
    import torch

    atol, rtol, bound = TOLERANCE[dtype]
    if got.shape != same_rounding.shape or got.dtype != same_rounding.dtype:
        expected = f"{same_rounding.dtype} {tuple(same_rounding.shape)}"
        return f"{label}: got {got.dtype} {tuple(got.shape)}, expected {expected}"
    if not torch.allclose(got, same_rounding, atol=atol, rtol=rtol):
        diff = (got.double() - same_rounding.double()).abs()
        return f"{label}: max |diff| {float(diff.max()):.3e} vs the {dtype} reference (atol {atol}, rtol {rtol})"
    err = float((got.double() - exact).norm() / exact.norm())
    if not err < bound:
        return f"{label}: relative error {err:.2e} vs float64 > {bound:.0e}"
    return ""


def _rows(g: Any, tokens: int, width: int, dtype: Any, strided: bool, device: str) -> Any:
    """Random [tokens, width] rows; a view with row stride width + 13 when ``strided``."""
    import torch

    full = torch.randn(tokens, width + 13 if strided else width, generator=g).to(dtype).to(device)
    return full[:, :width]


def _check_norm(spec: dict[str, Any], g: Any, device: str) -> str:
    import torch

    from engine.kernels.norm import fused_add_rms_norm, rms_norm

    dtype_name = spec.get("dtype", "float32")
    dtype, tokens, dim, strided = getattr(torch, dtype_name), spec["tokens"], spec["dim"], spec.get("strided", False)
    x = _rows(g, tokens, dim, dtype, strided, device)
    residual = _rows(g, tokens, dim, dtype, strided, device)
    weight = (1 + 0.5 * torch.randn(dim, generator=g)).to(dtype).to(device)
    before = (x.clone(), residual.clone())
    if spec["op"] == "add_rms":
        got, got_residual = fused_add_rms_norm(x, residual, weight, EPS)
        r = x + residual  # [T, D] in dtype, as the model's residual add
        exact_r = x.double() + residual.double()
    else:
        got, got_residual, r, exact_r = rms_norm(x, weight, EPS), None, x, x.double()
    h = r.float()
    same_rounding = weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS)).to(dtype)
    exact = weight.double() * exact_r * torch.rsqrt(exact_r.pow(2).mean(-1, keepdim=True) + EPS)
    if not (torch.equal(x, before[0]) and torch.equal(residual, before[1])):
        return "an input was written"
    if not got.is_contiguous():
        return f"out is not contiguous: strides {got.stride()}"
    if got_residual is not None:
        # Compiled, the add rounds to nearest even as torch's does: bit-equal. The interpreter's
        # float32 -> bfloat16 cast truncates instead, one ulp off at most.
        if device != "cpu" and not torch.equal(got_residual, r):
            return "the new residual is not bit-equal to x + residual"
        error = _compare("new residual", got_residual, r, exact_r, dtype_name)
        if error:
            return error
    return _compare("out", got, same_rounding, exact, dtype_name)


def _check_silu(spec: dict[str, Any], g: Any, device: str) -> str:
    import torch
    import torch.nn.functional as F

    from engine.kernels.activation import silu_and_mul

    dtype_name = spec.get("dtype", "float32")
    dtype, inter = getattr(torch, dtype_name), spec["inter"]
    gate_up = 2 * _rows(g, spec["tokens"], 2 * inter, dtype, spec.get("strided", False), device)
    before = gate_up.clone()
    got = silu_and_mul(gate_up)
    gate, up = gate_up.chunk(2, dim=-1)
    same_rounding = F.silu(gate) * up
    exact = F.silu(gate.double()) * up.double()
    if not torch.equal(gate_up, before):
        return "the input was written"
    return _compare("out", got, same_rounding, exact, dtype_name)


def _rotary_inputs(spec: dict[str, Any], g: Any, device: str) -> dict[str, Any]:
    """q, k, v laid out per ``layout``, positions, inv_freq, NaN-poisoned caches, a permuted slot mapping."""
    import torch

    dtype = getattr(torch, spec.get("dtype", "float32"))
    index_dtype = getattr(torch, spec.get("index_dtype", "int64"))
    tokens, heads, kv, dim, layout = spec["tokens"], spec["heads"], spec["kv"], spec["dim"], spec["layout"]
    if layout == "qkv":  # views of one fused projection [T, (H + 2 KVH) D], as the model splits it
        qkv = torch.randn(tokens, (heads + 2 * kv) * dim, generator=g).to(dtype).to(device)
        q, k, v = qkv.split([heads * dim, kv * dim, kv * dim], dim=-1)
        q, k, v = q.view(tokens, heads, dim), k.view(tokens, kv, dim), v.view(tokens, kv, dim)
    elif layout == "head-strided":  # heads 8 elements apart: stride(1) != D
        buf = torch.randn(tokens, heads + 2 * kv, dim + 8, generator=g).to(dtype).to(device)
        q, k, v = buf[:, :heads, :dim], buf[:, heads:heads + kv, :dim], buf[:, heads + kv:, :dim]
    else:
        q, k, v = (torch.randn(tokens, n, dim, generator=g).to(dtype).to(device) for n in (heads, kv, kv))
    positions = torch.randint(0, spec.get("max_pos", 4096) + 1, (tokens,), generator=g)
    positions[0] = spec.get("max_pos", positions[0])
    slots = tokens + 5  # five rows the mapping never names
    inv_freq = 1.0 / (500_000.0 ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))  # [D/2]
    return {"q": q, "k": k, "v": v, "positions": positions.to(index_dtype).to(device),
            "inv_freq": inv_freq.to(device),
            "k_cache": torch.full((slots, kv, dim), float("nan"), dtype=dtype, device=device),
            "v_cache": torch.full((slots, kv, dim), float("nan"), dtype=dtype, device=device),
            "slot_mapping": torch.randperm(slots, generator=g)[:tokens].to(index_dtype).to(device)}


def _rotate_reference(x: Any, positions: Any, inv_freq: Any, exact: bool) -> Any:
    """x [T, heads, D] rotated as ``engine.model.rope`` does it in x's dtype; or in float64 when ``exact``
    (from the same float32 angles)."""
    import torch

    freqs = positions.float().unsqueeze(-1) * inv_freq  # [T, D/2], float32
    emb = torch.cat((freqs, freqs), dim=-1)  # [T, D]
    if exact:
        x, cos, sin = x.double(), emb.double().cos().unsqueeze(1), emb.double().sin().unsqueeze(1)
    else:
        cos, sin = emb.cos().to(x.dtype).unsqueeze(1), emb.sin().to(x.dtype).unsqueeze(1)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _check_rotary(spec: dict[str, Any], g: Any, device: str) -> str:
    import torch

    from engine.kernels.rotary import rotary_store_kv

    dtype_name = spec.get("dtype", "float32")
    x = _rotary_inputs(spec, g, device)
    q0, k0, v0 = x["q"].clone(), x["k"].clone(), x["v"].clone()
    rotary_store_kv(**x)
    slots = x["slot_mapping"].long()
    others = torch.ones(x["k_cache"].shape[0], dtype=torch.bool, device=device)
    others[slots] = False
    if not (torch.equal(x["k"], k0) and torch.equal(x["v"], v0)):
        return "k or v was written"
    if not (x["k_cache"][others].isnan().all() and x["v_cache"][others].isnan().all()):
        return "a cache row outside the slot mapping was written"
    if not torch.equal(x["v_cache"][slots], v0):
        return "v_cache[slot_mapping] differs from v"
    for label, got, before in (("q", x["q"], q0), ("k_cache", x["k_cache"][slots], k0)):
        same_rounding = _rotate_reference(before, x["positions"], x["inv_freq"], exact=False)
        exact = _rotate_reference(before, x["positions"], x["inv_freq"], exact=True)
        # Compiled (no fma, casts to nearest even) every rounding is torch's: bit-equal. Interpreted,
        # casts to bfloat16 truncate and numpy's cos is not torch's.
        if device != "cpu" and not torch.equal(got, same_rounding):
            return f"{label}: {int((got != same_rounding).sum())} values differ from torch's bits"
        error = _compare(label, got, same_rounding, exact, dtype_name)
        if error:
            return error
    return ""


def _check_empty() -> str:
    import torch

    from engine.kernels.activation import silu_and_mul
    from engine.kernels.norm import fused_add_rms_norm, rms_norm
    from engine.kernels.rotary import rotary_store_kv

    x, w = torch.zeros(0, 48), torch.ones(48)
    out, residual = fused_add_rms_norm(x, x, w, EPS)
    if rms_norm(x, w, EPS).shape != (0, 48) or out.shape != (0, 48) or residual.shape != (0, 48):
        return "norms: wrong empty shapes"
    if silu_and_mul(torch.zeros(0, 688)).shape != (0, 344):
        return "silu_and_mul: wrong empty shape"
    cache = torch.full((3, 2, 64), float("nan"))
    none = torch.zeros(0, dtype=torch.long)
    rotary_store_kv(torch.zeros(0, 4, 64), torch.zeros(0, 2, 64), torch.zeros(0, 2, 64), none, torch.ones(32),
                    cache, cache.clone(), none)
    return "" if cache.isnan().all() else "rotary_store_kv wrote to the cache for no tokens"


def _check_rejections() -> str:
    """Each bad input must raise ValueError before any kernel runs."""
    import torch

    from engine.kernels.activation import silu_and_mul
    from engine.kernels.norm import fused_add_rms_norm, rms_norm
    from engine.kernels.rotary import rotary_store_kv

    x, w, i64 = torch.zeros(3, 48), torch.ones(48), torch.long

    def rotary(**change: Any) -> None:
        args = {"q": torch.zeros(2, 4, 64), "k": torch.zeros(2, 2, 64), "v": torch.zeros(2, 2, 64),
                "positions": torch.zeros(2, dtype=i64), "inv_freq": torch.ones(32),
                "k_cache": torch.zeros(5, 2, 64), "v_cache": torch.zeros(5, 2, 64),
                "slot_mapping": torch.zeros(2, dtype=i64)}
        rotary_store_kv(**{**args, **change})

    bad = {
        "rms_norm: x 1-D": lambda: rms_norm(torch.zeros(48), w, EPS),
        "rms_norm: x int": lambda: rms_norm(torch.zeros(3, 48, dtype=i64), w, EPS),
        "rms_norm: x columns strided": lambda: rms_norm(torch.zeros(48, 3).t(), torch.ones(3), EPS),
        "rms_norm: weight length": lambda: rms_norm(x, torch.ones(47), EPS),
        "rms_norm: weight dtype": lambda: rms_norm(x, w.bfloat16(), EPS),
        "fused_add_rms_norm: residual shape": lambda: fused_add_rms_norm(x, torch.zeros(2, 48), w, EPS),
        "fused_add_rms_norm: residual dtype": lambda: fused_add_rms_norm(x, x.half(), w, EPS),
        "silu_and_mul: odd width": lambda: silu_and_mul(torch.zeros(3, 7)),
        "silu_and_mul: 3-D": lambda: silu_and_mul(torch.zeros(3, 2, 8)),
        "silu_and_mul: columns strided": lambda: silu_and_mul(torch.zeros(8, 3).t()),
        "rotary: head dim 48": lambda: rotary(q=torch.zeros(2, 4, 48), k=torch.zeros(2, 2, 48),
                                              v=torch.zeros(2, 2, 48), inv_freq=torch.ones(24),
                                              k_cache=torch.zeros(5, 2, 48), v_cache=torch.zeros(5, 2, 48)),
        "rotary: no KV heads": lambda: rotary(k=torch.zeros(2, 0, 64), v=torch.zeros(2, 0, 64),
                                              k_cache=torch.zeros(5, 0, 64), v_cache=torch.zeros(5, 0, 64)),
        "rotary: k tokens": lambda: rotary(k=torch.zeros(3, 2, 64)),
        "rotary: v heads": lambda: rotary(v=torch.zeros(2, 1, 64)),
        "rotary: k dtype": lambda: rotary(k=torch.zeros(2, 2, 64, dtype=torch.float16)),
        "rotary: cache heads": lambda: rotary(k_cache=torch.zeros(5, 1, 64)),
        "rotary: v_cache shape": lambda: rotary(v_cache=torch.zeros(6, 2, 64)),
        "rotary: cache not contiguous": lambda: rotary(k_cache=torch.zeros(64, 2, 5).permute(2, 1, 0)),
        "rotary: q head strided": lambda: rotary(q=torch.zeros(2, 64, 4).transpose(1, 2)),
        "rotary: positions float": lambda: rotary(positions=torch.zeros(2)),
        "rotary: slot_mapping length": lambda: rotary(slot_mapping=torch.zeros(3, dtype=i64)),
        "rotary: inv_freq length": lambda: rotary(inv_freq=torch.ones(64)),
        "rotary: inv_freq dtype": lambda: rotary(inv_freq=torch.ones(32, dtype=torch.float64)),
    }
    accepted = []
    for name, call in bad.items():
        try:
            call()
        except ValueError:
            continue
        accepted.append(name)
    return f"accepted: {accepted}" if accepted else ""


def _check_case(name: str, spec: dict[str, Any], device: str = "cpu") -> str:
    """Run one case in this process (interpreted on CPU, compiled on CUDA); '' when it passes."""
    import torch

    g = torch.Generator().manual_seed(sum(map(ord, name)))
    op = spec["op"]
    if op == "empty":
        return _check_empty()
    if op == "reject":
        return _check_rejections()
    if op == "silu":
        return _check_silu(spec, g, device)
    if op == "rotary":
        return _check_rotary(spec, g, device)
    return _check_norm(spec, g, device)


def _main() -> None:
    report(CASES, _check_case)


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    return run_cases("tests.test_fused_kernels", "the fused kernels")


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c]["op"] not in ("empty", "reject")])
def test_kernel_matches_torch(interpreted: dict[str, str], case: str) -> None:
    assert interpreted[case] == ""


def test_launchers_handle_no_tokens(interpreted: dict[str, str]) -> None:
    assert interpreted["empty-t0"] == ""


def test_launchers_reject_bad_input(interpreted: dict[str, str]) -> None:
    """Shapes, dtypes, strides and lengths are checked before any kernel runs, with ValueError."""
    assert interpreted["rejects-bad-input"] == ""


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
@pytest.mark.parametrize("case", list(GPU_CASES))
def test_kernel_on_cuda(case: str) -> None:
    """Compiled for the GPU this time, at a Llama-3-8B layer's sizes."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    assert _check_case(case, GPU_CASES[case], device="cuda") == ""


if __name__ == "__main__":
    _main()
