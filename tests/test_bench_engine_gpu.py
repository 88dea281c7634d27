"""``bench/engine_gpu.py --smoke``: the GPU benchmark's every section, end to end on tiny shapes on CPU.

The benchmark only runs for real on a lent GPU, where device time is scarce; this keeps the script
from breaking unnoticed between those sessions (an engine option it passes, a result it reads). It
checks that the run succeeds and that each section produced positive numbers for both model shapes,
not the numbers themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_smoke_run_fills_every_section(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "bench.engine_gpu", "--smoke", "--json", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
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
