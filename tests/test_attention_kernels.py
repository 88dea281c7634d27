"""The Triton paged decode attention kernel (``engine/attention/triton_decode.py``) and the torch
reference the CPU path uses (``engine/attention/torch_ref.py``), both against the math written out
in float64, the kernel run by Triton's interpreter on CPU.

As in ``tests/test_bitmask_kernel.py``, ``TRITON_INTERPRET`` must be set before the kernel module is
imported and must not leak into the session, so the cases run in one child process
(``python -m tests.test_attention_kernels``) and each test asserts one case's result.

Each case draws random queries, a random KV pool and, per sequence, a random set of slots (a
shuffled pool, so contexts are scattered as after eviction), writes them into a slot table whose
unused cells hold the pad slot, and poisons the output before the call so an unwritten element
shows up as NaN.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from tests.interpreted import report, run_cases

CASES: dict[str, dict[str, Any]] = {
    # heads / kv_heads / head_dim, context lengths per sequence, splits, dtype, sliding window
    "gqa-fp32-one-split": {"heads": 4, "kv": 2, "dim": 64, "lengths": [1, 17, 130], "splits": 1},
    "gqa-fp32-four-splits": {"heads": 4, "kv": 2, "dim": 64, "lengths": [1, 17, 130], "splits": 4},
    "mha-fp32-split-many-empty": {"heads": 2, "kv": 2, "dim": 32, "lengths": [3, 2], "splits": 16},
    "qwen7b-groups-of-7-bf16": {"heads": 14, "kv": 2, "dim": 128, "lengths": [200, 5], "splits": 2,
                                "dtype": "bfloat16"},
    "llama-groups-of-4-fp16": {"heads": 8, "kv": 2, "dim": 128, "lengths": [64, 65, 1], "splits": 1,
                               "dtype": "float16"},
    "one-kv-head-bf16-splits": {"heads": 8, "kv": 1, "dim": 64, "lengths": [257], "splits": 8, "dtype": "bfloat16"},
    "sliding-window": {"heads": 4, "kv": 2, "dim": 64, "lengths": [150, 30, 1], "splits": 2, "window": 40},
    "sliding-window-one-split": {"heads": 4, "kv": 2, "dim": 64, "lengths": [150, 64], "splits": 1, "window": 64},
}
TOLERANCE = {"float32": 1e-5, "bfloat16": 2e-2, "float16": 4e-3}
"""Relative error ‖out − ref‖ / ‖ref‖ against float64 (bf16 operands land between 1e-3 and 1e-2)."""


def _inputs(spec: dict[str, Any], seed: int) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, spec.get("dtype", "float32"))
    heads, kv, dim, lengths = spec["heads"], spec["kv"], spec["dim"], spec["lengths"]
    pool = sum(lengths) + 40
    pad = pool  # the pool's last slot is the pad slot, as in KVPool
    k_cache = torch.randn(pool + 1, kv, dim, generator=g).to(dtype)
    v_cache = torch.randn(pool + 1, kv, dim, generator=g).to(dtype)
    k_cache[pad] = 0
    v_cache[pad] = 0
    order = torch.randperm(pool, generator=g).tolist()
    width = max(lengths) + 9
    rows = len(lengths) + 3  # unused rows stay all-pad
    table = torch.full((rows, width), pad, dtype=torch.int32)
    seq_rows = torch.randperm(rows, generator=g)[: len(lengths)].to(torch.int32)
    slots = []
    for i, n in enumerate(lengths):
        mine, order = order[:n], order[n:]
        slots.append(mine)
        table[int(seq_rows[i]), :n] = torch.tensor(mine, dtype=torch.int32)
    q = torch.randn(len(lengths), heads, dim, generator=g).to(dtype)
    return {"q": q, "k": k_cache, "v": v_cache, "table": table, "seq_rows": seq_rows, "slots": slots,
            "lengths": torch.tensor(lengths, dtype=torch.int32), "scale": dim ** -0.5}


def _math(x: dict[str, Any], window: int | None) -> Any:
    """o = softmax(q·Kᵀ·scale) V over each sequence's (windowed) context, in float64."""
    import torch

    q, k, v = x["q"].double(), x["k"].double(), x["v"].double()
    heads, kv = q.shape[1], k.shape[1]
    out = torch.empty_like(q)
    for b, slots in enumerate(x["slots"]):
        ctx = slots[-window:] if window else slots
        for h in range(heads):
            kh = k[ctx, h // (heads // kv)]  # [n, D]
            weights = torch.softmax(kh @ q[b, h] * x["scale"], dim=0)
            out[b, h] = weights @ v[ctx, h // (heads // kv)]
    return out


def _check_case(name: str, spec: dict[str, Any]) -> str:
    import torch

    from engine.attention.metadata import AttentionMetadata, DecodeGroup
    from engine.attention.torch_ref import decode_attention as torch_decode
    from engine.attention.triton_decode import decode_attention

    x = _inputs(spec, seed=sum(map(ord, name)))
    window = spec.get("window")
    expected = _math(x, window)
    got = torch.full_like(x["q"], float("nan"))
    decode_attention(x["q"], x["k"], x["v"], x["table"], x["seq_rows"], x["lengths"], scale=x["scale"],
                     window=window, splits=spec["splits"], out=got)
    lengths = x["lengths"]
    meta = AttentionMetadata(torch.zeros(0, dtype=torch.long),
                             DecodeGroup(torch.arange(len(lengths)), x["seq_rows"], lengths, int(lengths.max())),
                             [], x["table"])
    reference = torch_decode(x["q"], x["k"], x["v"], meta, scale=x["scale"], window=window)
    tol = TOLERANCE[spec.get("dtype", "float32")]
    for label, result in (("triton", got), ("torch", reference)):
        if torch.isnan(result).any():
            return f"{label}: {int(torch.isnan(result).sum())} outputs not written (NaN)"
        err = float((result.double() - expected).norm() / expected.norm())
        if not err < tol:
            return f"{label}: relative error {err:.2e} > {tol:.0e}"
    return ""


def _main() -> None:
    report(CASES, _check_case)


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    return run_cases("tests.test_attention_kernels", "the GPU attention kernel")


@pytest.mark.parametrize("case", list(CASES))
def test_decode_kernel_matches_math(interpreted: dict[str, str], case: str) -> None:
    assert interpreted[case] == ""


@pytest.mark.parametrize("splits, longest, expected", [
    (None, None, None),  # see below: computed from the rule, checked for its properties
])
def test_default_splits_is_a_power_of_two_within_bounds(splits: None, longest: None, expected: None) -> None:
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    from engine.attention.triton_decode import BLOCK_N, MAX_SPLITS, default_splits

    for batch in (1, 3, 16, 64, 256):
        for kv_heads in (1, 4, 8):
            for length in (None, 1, 63, 1000, 100_000):
                s = default_splits(batch, kv_heads, length, sm_count=132)
                assert 1 <= s <= MAX_SPLITS and s & (s - 1) == 0
                if length is not None:  # never more spans than blocks of context (rounded to a power of two)
                    assert s < 2 * max(1, -(-length // BLOCK_N))
    assert default_splits(1, 8, None, sm_count=132) == MAX_SPLITS  # 8 programs on 132 SMs: split
    assert default_splits(256, 8, None, sm_count=132) == 1  # 2048 programs fill the GPU already


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_decode_kernel_on_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from engine.attention.triton_decode import decode_attention

    spec = {"heads": 32, "kv": 8, "dim": 128, "lengths": [1, 100, 1000, 4097], "dtype": "bfloat16"}
    for splits in (1, 4, 16):
        for window in (None, 512):
            x = _inputs(spec, seed=splits)
            expected = _math(x, window)
            cuda = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in x.items()}
            got = decode_attention(cuda["q"], cuda["k"], cuda["v"], cuda["table"], cuda["seq_rows"],
                                   cuda["lengths"], scale=x["scale"], window=window, splits=splits)
            err = float((got.double().cpu() - expected).norm() / expected.norm())
            assert err < TOLERANCE["bfloat16"], (splits, window, err)


if __name__ == "__main__":
    _main()
