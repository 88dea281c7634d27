"""The small-batch projection kernel with fused prologues (``engine/kernels/gemv.py``) against torch:
the prologue's input to the projection computed by the model's own torch code (the RMSNorm module,
the residual add, ``F.silu``), then projected in float64. Run by Triton's interpreter on CPU in one
child process (see ``tests/interpreted.py``).

Shapes are chosen so neither the output columns nor the reduction divide the kernel's blocks, and
the rows run from one token to the kernel's sixteen.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from tests.interpreted import run_cases

CASES: dict[str, dict[str, Any]] = {
    "plain-one-row-fp32": {"prologue": "none", "rows": 1, "n": 70, "k": 100},
    "plain-bias-bf16": {"prologue": "none", "rows": 3, "n": 96, "k": 130, "bias": True, "dtype": "bfloat16"},
    "rms-norm-fp32": {"prologue": "rms_norm", "rows": 2, "n": 40, "k": 200},
    "add-rms-norm-16-rows-fp32": {"prologue": "add_rms_norm", "rows": 16, "n": 33, "k": 150, "bias": True},
    "add-rms-norm-bf16": {"prologue": "add_rms_norm", "rows": 1, "n": 64, "k": 256, "dtype": "bfloat16"},
    "add-rms-norm-fp16": {"prologue": "add_rms_norm", "rows": 5, "n": 50, "k": 96, "dtype": "float16"},
    "silu-mul-fp32": {"prologue": "silu_mul", "rows": 4, "n": 48, "k": 90},
    "silu-mul-bf16": {"prologue": "silu_mul", "rows": 1, "n": 64, "k": 176, "dtype": "bfloat16"},
}
TOLERANCE = {"float32": 1e-5, "bfloat16": 2e-2, "float16": 2e-3}
"""Relative error of y against the float64 projection of torch's (rounded) input. In half types the
interpreter's roundings may differ from torch's by an ulp (as in ``tests/test_fused_kernels.py``),
and a dot product of such inputs amplifies that a little."""


def _check_case(name: str, spec: dict[str, Any]) -> str:
    import torch
    import torch.nn.functional as F

    from engine.kernels.gemv import gemv
    from engine.model.llama import RMSNorm

    g = torch.Generator().manual_seed(sum(map(ord, name)))
    dtype = getattr(torch, spec.get("dtype", "float32"))
    rows, n, k, prologue = spec["rows"], spec["n"], spec["k"], spec["prologue"]
    x = torch.randn(rows, 2 * k if prologue == "silu_mul" else k, generator=g).to(dtype)
    weight = (torch.randn(n, k, generator=g) / k ** 0.5).to(dtype)
    bias = torch.randn(n, generator=g).to(dtype) if spec.get("bias") else None
    norm = RMSNorm(k, 1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(k, generator=g))
    residual = torch.randn(rows, k, generator=g).to(dtype) if prologue == "add_rms_norm" else None
    with torch.no_grad():
        if prologue == "none":
            a = x
        elif prologue == "rms_norm":
            a = norm(x)
        elif prologue == "add_rms_norm":
            assert residual is not None
            summed = residual + x  # the model's torch path: residual = residual + x, then the norm
            a = norm(summed)
        else:
            gate, up = x.chunk(2, dim=-1)
            a = F.silu(gate) * up
    want = a.double() @ weight.double().T + (bias.double() if bias is not None else 0)
    y, new_residual = gemv(x, weight, bias, prologue=prologue, residual=residual,
                           norm_weight=norm.weight.detach() if "norm" in prologue else None, eps=1e-5)
    if y.shape != (rows, n) or y.dtype != dtype:
        return f"y is {y.dtype} {tuple(y.shape)}"
    err = float((y.double() - want).norm() / want.norm())
    if not err < TOLERANCE[spec.get("dtype", "float32")]:
        return f"relative error {err:.2e}"
    if prologue == "add_rms_norm":  # exact in float32; within an ulp in the half types
        ulp = 0.0 if dtype == torch.float32 else torch.finfo(dtype).eps
        if new_residual is None or not torch.allclose(new_residual.float(), summed.float(), rtol=ulp, atol=0.0):
            return "new residual differs from residual + x"
    if prologue != "add_rms_norm" and new_residual is not None:
        return "a new residual without add_rms_norm"
    return ""


def _engine_case() -> str:
    """The demo model's engine with ``fused_gemv`` against without: two decode steps (the second attends
    over keys and values the first projected) run every projection through the kernel, prefill chunks
    stay on torch; the same greedy tokens and log-probabilities within float32 rounding."""
    from engine import Engine, SamplingParams

    prompts = [[(7 * i + 3) % 500 + 10 for i in range(30)], [(11 * i + 1) % 400 + 5 for i in range(9)],
               [(5 * i + 2) % 300 + 7 for i in range(12)]]
    params = SamplingParams(max_new_tokens=3, temperature=0.0, logprobs=True)
    outputs = {}
    for fused in (False, True):
        engine = Engine("demo", fused_gemv=fused)
        outputs[fused] = [(o.token_ids, o.logprobs) for o in engine.generate(prompts, params)]
    for (tokens, logprobs), (tokens_f, logprobs_f) in zip(outputs[False], outputs[True], strict=True):
        if tokens != tokens_f:
            return f"tokens differ: torch {tokens} vs fused {tokens_f}"
        worst = max(abs(a - b) for a, b in zip(logprobs or [], logprobs_f or [], strict=True))
        if not worst < 1e-4:
            return f"logprobs differ by up to {worst:.2e}"
    return ""


def _main() -> None:
    from tests.interpreted import report

    report({**CASES, "engine": {}}, lambda name, spec: _engine_case() if name == "engine" else _check_case(name, spec))


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    return run_cases("tests.test_gemv_kernel", "the small-batch projection kernel")


@pytest.mark.parametrize("case", list(CASES))
def test_gemv_matches_torch(interpreted: dict[str, str], case: str) -> None:
    assert interpreted[case] == ""


def test_engine_with_fused_gemv_generates_what_torch_does(interpreted: dict[str, str]) -> None:
    assert interpreted["engine"] == ""


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_gemv_on_cuda() -> None:
    """Compiled and autotuned on the GPU, at Llama-3-8B's shapes in bf16, one and sixteen rows."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from engine.kernels.gemv import Prologue, gemv

    g = torch.Generator(device="cuda").manual_seed(0)
    shapes: list[tuple[Prologue, int, int]] = [("add_rms_norm", 6144, 4096), ("none", 4096, 4096),
                                               ("silu_mul", 4096, 14336)]
    for rows in (1, 16):
        for prologue, n, k in shapes:
            x = torch.randn(rows, 2 * k if prologue == "silu_mul" else k, device="cuda", generator=g).bfloat16()
            w = (torch.randn(n, k, device="cuda", generator=g) / k ** 0.5).bfloat16()
            res = torch.randn(rows, k, device="cuda", generator=g).bfloat16() if prologue == "add_rms_norm" else None
            nw = torch.ones(k, device="cuda").bfloat16() if prologue == "add_rms_norm" else None
            y, _ = gemv(x, w, prologue=prologue, residual=res, norm_weight=nw)
            if prologue == "silu_mul":
                gate, up = x.chunk(2, dim=-1)
                a = torch.nn.functional.silu(gate) * up
            elif prologue == "add_rms_norm":
                assert res is not None
                r = (x + res).float()
                a = (r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + 1e-6)).bfloat16()
            else:
                a = x
            want = a.double() @ w.double().T
            err = float((y.double() - want).norm() / want.norm())
            assert err < 1e-2, (rows, prologue, err)


if __name__ == "__main__":
    _main()
