"""``bench/engine_gpu.py --smoke``: the GPU benchmark's every section, end to end on tiny shapes on CPU.

The benchmark only runs for real on a lent GPU, where device time is scarce; this keeps the script
from breaking unnoticed between those sessions (an engine option it passes, a result it reads). It
checks that the run succeeds and that each section produced positive numbers for both model shapes,
not the numbers themselves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests import background

background.register("bench-engine-gpu-smoke", __name__,
                    [sys.executable, "-m", "bench.engine_gpu", "--smoke", "--json", "{workdir}/smoke.json"],
                    unset=("TRITON_INTERPRET",), timeout=300)


def test_smoke_run_fills_every_section() -> None:
    proc = background.result("bench-engine-gpu-smoke")  # started when collection ended
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((background.workdir("bench-engine-gpu-smoke") / "smoke.json").read_text())
    models = results["models"]
    assert set(models) == {"llama3-8b", "qwen2.5-7b"}
    for name, r in models.items():
        assert all(d["decode_tok_s"] > 0 for d in r["decode"].values()), name
        assert r["decode_eager"] and r["hf"], name
        assert {(p["chunk_size"], p["kernel"]) for p in r["prefill"]} >= {(512, "sdpa"), (2048, "sdpa")}, name
        assert all(p["tok_s"] > 0 for p in r["prefill"]), name
    agent = models["qwen2.5-7b"]["agent"]
    assert agent["turns"] and all(turn["hit_rate"] > 0 for turn in agent["turns"][1:])
    constrained = models["qwen2.5-7b"]["constrained"]
    assert constrained["constrained"]["stopped"] == constrained["constrained"]["requests"]  # the grammar ended each
    assert "Prefill" in proc.stdout and "Constrained decoding" in proc.stdout
    roofline = proc.stdout.split("### Memory roofline")[1].split("###")[0]
    assert all(f"| {name} |" in roofline for name in models), roofline  # its rows, not another table's


def test_full_batch_window_ends_when_the_first_request_does(demo_path: Path) -> None:
    """Prefills staggered over steps (a small chunk budget): the decode window, from the step in which the last
    request got its first token, still holds steps in which the early requests had ended; the full-batch window
    stops at the step in which the first one ended, and every step in it decoded the whole batch."""
    from bench.engine_gpu import drive, random_prompts
    from engine import Engine, Request, SamplingParams

    batch, prompt_len, new_tokens = 4, 32, 8
    engine = Engine("demo", max_kv_tokens=4096, chunk_size=prompt_len)  # one prompt per step
    params = SamplingParams(temperature=0, max_new_tokens=new_tokens, ignore_eos=True)
    prompts = random_prompts(batch, prompt_len, engine.model.config.vocab_size, seed=3)
    run = drive(engine, [Request(prompt=p, params=params) for p in prompts])
    # Request i (0-based) prefills in step i + 1, so the first ends in step new_tokens, the last in new_tokens + 3.
    assert run.full_steps == new_tokens - batch
    assert run.full_tokens == batch * run.full_steps
    assert run.decode_steps == new_tokens - 1
    assert run.decode_tokens < batch * run.decode_steps
    assert 0 < run.full < run.decode


def test_fused_gemv_batches_follow_the_kernel_limit() -> None:
    """The benchmark measures ``fused_gemv`` at the decode batches the kernel takes."""
    import importlib.util

    import pytest

    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    from bench.engine_gpu import Plan, fused_gemv_batches
    from engine.kernels.gemv import MAX_ROWS

    batches = fused_gemv_batches(Plan())
    assert batches and max(batches) <= MAX_ROWS
    assert batches == [b for b in Plan().batches if b <= MAX_ROWS]
