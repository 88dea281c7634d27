"""The Triton paged extend (prefill) attention kernel (``engine/attention/triton_extend.py``) against
the math written out in float64, and the torch path (``torch_ref.prefill_attention``) against the
same math, the kernel run by Triton's interpreter on CPU in one child process (see
``tests/interpreted.py``).

Each case draws a random KV pool and scatters every chunk's context over it (a shuffled pool, as
after eviction), puts the chunks' rows of ``q`` between rows that belong to nobody (decode rows in a
real step), and poisons the output with NaN: every chunk row must be written, every other row left
alone. Chunks start at position 0 or after a cached prefix, are shorter or longer than a query
block, and share one launch.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from tests.interpreted import run_cases

CASES: dict[str, dict[str, Any]] = {
    # heads / kv heads / head dim; chunks as (cached prefix, new tokens); dtype; sliding window
    "fresh-prompts-gqa-fp32": {"heads": 4, "kv": 2, "dim": 32, "chunks": [(0, 5), (0, 70)]},
    "after-a-prefix-fp32": {"heads": 4, "kv": 2, "dim": 32, "chunks": [(37, 9), (100, 66), (0, 1)]},
    "one-token-chunk-after-prefix": {"heads": 2, "kv": 1, "dim": 16, "chunks": [(130, 1)]},
    "qwen7b-groups-of-7-bf16": {"heads": 14, "kv": 2, "dim": 128, "chunks": [(20, 33), (0, 65)],
                                "dtype": "bfloat16"},
    "llama-groups-of-4-fp16": {"heads": 8, "kv": 2, "dim": 64, "chunks": [(64, 64), (3, 2)], "dtype": "float16"},
    "sliding-window-fp32": {"heads": 4, "kv": 2, "dim": 32, "chunks": [(90, 40), (0, 75), (5, 3)], "window": 24},
    "window-wider-than-context": {"heads": 2, "kv": 2, "dim": 16, "chunks": [(10, 20)], "window": 4096},
}
TOLERANCE = {"float32": 1e-5, "bfloat16": 2e-2, "float16": 4e-3}
"""Relative error ‖out − ref‖ / ‖ref‖ against float64."""


def _inputs(spec: dict[str, Any], seed: int) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, spec.get("dtype", "float32"))
    heads, kv, dim = spec["heads"], spec["kv"], spec["dim"]
    contexts = [prefix + new for prefix, new in spec["chunks"]]
    pool = sum(contexts) + 50
    pad = pool  # the pool's last slot is the pad slot, as in KVPool
    k_cache = torch.randn(pool + 1, kv, dim, generator=g).to(dtype)
    v_cache = torch.randn(pool + 1, kv, dim, generator=g).to(dtype)
    k_cache[pad] = 0
    v_cache[pad] = 0
    order = torch.randperm(pool, generator=g).tolist()
    rows = len(contexts) + 2  # unused rows stay all-pad
    table = torch.full((rows, max(contexts) + 7), pad, dtype=torch.int32)
    table_rows = torch.randperm(rows, generator=g)[: len(contexts)].tolist()
    chunks, slots, q0 = [], [], 3  # rows 0-2 belong to no chunk
    for (prefix, new), row in zip(spec["chunks"], table_rows, strict=True):
        mine, order = order[: prefix + new], order[prefix + new:]
        slots.append(mine)
        table[row, : prefix + new] = torch.tensor(mine, dtype=torch.int32)
        chunks.append((q0, new, prefix, row))
        q0 += new + 2  # two rows of nobody between chunks
    q = torch.randn(q0 + 1, heads, dim, generator=g).to(dtype)
    return {"q": q, "k": k_cache, "v": v_cache, "table": table, "chunks": chunks, "slots": slots,
            "scale": dim ** -0.5}


def _math(x: dict[str, Any], window: int | None) -> dict[int, Any]:
    """Row → o [heads, dim] in float64: causal (windowed) softmax attention over the row's context."""
    import torch

    q, k, v = x["q"].double(), x["k"].double(), x["v"].double()
    heads, kv = q.shape[1], k.shape[1]
    out = {}
    for (q0, new, prefix, _), slots in zip(x["chunks"], x["slots"], strict=True):
        for t in range(new):
            pos = prefix + t
            first = max(0, pos - window + 1) if window else 0
            ctx = slots[first:pos + 1]
            o = torch.empty(heads, q.shape[2], dtype=torch.float64)
            for h in range(heads):
                g = h // (heads // kv)
                weights = torch.softmax(k[ctx, g] @ q[q0 + t, h] * x["scale"], dim=0)
                o[h] = weights @ v[ctx, g]
            out[q0 + t] = o
    return out


def _check_case(name: str, spec: dict[str, Any]) -> str:
    import torch

    from engine.attention.metadata import AttentionMetadata, PrefillSeq
    from engine.attention.torch_ref import prefill_attention
    from engine.attention.triton_extend import extend_attention, extend_plan

    x = _inputs(spec, seed=sum(map(ord, name)))
    window = spec.get("window")
    expected = _math(x, window)
    got = torch.full_like(x["q"], float("nan"))
    plan = extend_plan(x["chunks"], x["table"], x["q"].shape[0])
    extend_attention(x["q"], x["k"], x["v"], x["table"], plan, scale=x["scale"], window=window, out=got)
    prefills = [PrefillSeq(q0, new, prefix, x["table"][row, : prefix + new].long())
                for q0, new, prefix, row in x["chunks"]]
    meta = AttentionMetadata(torch.zeros(0, dtype=torch.long), None, prefills, x["table"])
    reference = torch.full_like(x["q"], float("nan"))
    prefill_attention(x["q"], x["k"], x["v"], meta, reference, scale=x["scale"], window=window)
    rows = sorted(expected)
    want = torch.stack([expected[r] for r in rows])
    others = [r for r in range(x["q"].shape[0]) if r not in expected]
    tol = TOLERANCE[spec.get("dtype", "float32")]
    for label, result in (("triton", got), ("torch", reference)):
        mine = result[rows]
        if torch.isnan(mine).any():
            return f"{label}: {int(torch.isnan(mine).sum())} outputs of chunk rows not written (NaN)"
        if not torch.isnan(result[others]).all():
            return f"{label}: wrote rows that belong to no chunk"
        err = float((mine.double() - want).norm() / want.norm())
        if not err < tol:
            return f"{label}: relative error {err:.2e} > {tol:.0e}"
    return ""


def _engine_case() -> str:
    """The demo model's engine with ``prefill_attention="triton"`` against the torch path, for prompts
    longer than a chunk (the second and third chunks attend over a cached prefix) and a follow-up that
    hits the prefix cache: the same greedy tokens, and the same log-probabilities of them to float32
    rounding (the random demo model's greedy tokens barely depend on attention; its logprobs do)."""
    from engine import Engine, SamplingParams

    prompts = [[(7 * i + 3) % 500 + 10 for i in range(150)], [(11 * i + 1) % 400 + 5 for i in range(41)]]
    params = SamplingParams(max_new_tokens=6, temperature=0.0, logprobs=True)
    outputs = {}
    for kernel in ("sdpa", "triton"):
        engine = Engine("demo", chunk_size=64, prefill_attention=kernel)
        first = engine.generate(prompts, params)
        again = engine.generate([prompts[0] + first[0].token_ids + [42, 43, 44]], params)
        if engine.stats().cached_hit_tokens < 150:
            return f"{kernel}: the follow-up did not hit the prefix cache ({engine.stats().cached_hit_tokens} tokens)"
        outputs[kernel] = [(o.token_ids, o.logprobs) for o in first + again]
    for (tokens, logprobs), (tokens_t, logprobs_t) in zip(outputs["sdpa"], outputs["triton"], strict=True):
        if tokens != tokens_t:
            return f"tokens differ: sdpa {tokens} vs triton {tokens_t}"
        worst = max(abs(a - b) for a, b in zip(logprobs or [], logprobs_t or [], strict=True))
        if not worst < 1e-4:
            return f"logprobs differ by up to {worst:.2e}: sdpa {logprobs} vs triton {logprobs_t}"
    return ""


def _main() -> None:
    from tests.interpreted import report

    report({**CASES, "engine": {}}, lambda name, spec: _engine_case() if name == "engine" else _check_case(name, spec))


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    return run_cases("tests.test_extend_kernel", "the GPU extend attention kernel")


@pytest.mark.parametrize("case", list(CASES))
def test_extend_kernel_matches_math(interpreted: dict[str, str], case: str) -> None:
    assert interpreted[case] == ""


def test_engine_with_the_extend_kernel_generates_what_the_torch_path_does(interpreted: dict[str, str]) -> None:
    assert interpreted["engine"] == ""


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_extend_kernel_on_cuda() -> None:
    """Compiled for the GPU (no interpreter): Llama- and Qwen-shaped heads in bf16, long prompts after long
    cached prefixes, several chunks per launch, with and without a window."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from engine.attention.triton_extend import extend_attention, extend_plan

    specs: list[dict[str, Any]] = [
        {"heads": 32, "kv": 8, "dim": 128, "chunks": [(0, 700), (1500, 129), (4000, 1)]},
        {"heads": 28, "kv": 4, "dim": 128, "chunks": [(333, 64), (0, 2048)], "window": 512},
    ]
    for spec in specs:
        x = _inputs({**spec, "dtype": "bfloat16"}, seed=len(spec["chunks"]))
        expected = _math(x, spec.get("window"))
        cuda = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in x.items()}
        got = torch.full_like(cuda["q"], float("nan"))
        plan = extend_plan(x["chunks"], cuda["table"], cuda["q"].shape[0])
        extend_attention(cuda["q"], cuda["k"], cuda["v"], cuda["table"], plan, scale=x["scale"],
                         window=spec.get("window"), out=got)
        rows = sorted(expected)
        want = torch.stack([expected[r] for r in rows])
        err = float((got[rows].double().cpu() - want).norm() / want.norm())
        assert err < TOLERANCE["bfloat16"], (spec, err)


if __name__ == "__main__":
    _main()
