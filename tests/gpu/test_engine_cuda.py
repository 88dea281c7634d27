"""The engine on CUDA against transformers on the same GPU (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from engine import Engine, SamplingParams
from tests.helpers import assert_no_leaks, save_hf_model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "mistral"])
def test_cuda_float32_matches_transformers(tmp_path, arch: str) -> None:  # type: ignore[no-untyped-def]
    model = save_hf_model(arch, tmp_path, seed=1).to("cuda")
    engine = Engine(str(tmp_path), device="cuda", dtype="float32", max_kv_tokens=4096)
    ids = torch.randint(0, 512, (120,), generator=torch.Generator().manual_seed(3)).tolist()
    with torch.no_grad():
        ref = model(torch.tensor([ids], device="cuda")).logits[0].float()
    assert (engine.score(ids) - ref).abs().max().item() <= 1e-3  # TF32/cuBLAS reductions differ from CPU
    prompts = [ids[:n] for n in (1, 9, 40, 77)]
    outs = engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=16))
    for p, out in zip(prompts, outs, strict=True):
        with torch.no_grad():
            hf = model.generate(torch.tensor([p], device="cuda"), max_new_tokens=16, do_sample=False,
                                attention_mask=torch.ones(1, len(p), dtype=torch.long, device="cuda"))
        assert out.token_ids == hf[0, len(p):].tolist()
    assert_no_leaks(engine)


def test_cuda_bfloat16_demo_generates() -> None:
    engine = Engine("demo", device="cuda", max_kv_tokens=8192)
    outs = engine.generate(["Hello"] * 8, SamplingParams(max_new_tokens=32, seed=5))
    assert all(len(o.token_ids) == 32 or o.finish_reason == "stop" for o in outs)
    assert len({tuple(o.token_ids) for o in outs}) == 1  # same seed, same prompt
    assert_no_leaks(engine)


def _prompts(n: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 700, (n,), generator=g).tolist()  # past several 64-token kernel blocks
    return [torch.randint(0, 512, (length,), generator=g).tolist() for length in lengths]


@pytest.mark.parametrize("batch", [1, 3, 9, 17])
def test_cuda_graphs_equal_eager(tmp_path, batch: int) -> None:  # type: ignore[no-untyped-def]
    """Batch sizes between captured sizes are padded; the padded rows must not disturb real ones."""
    save_hf_model("qwen2", tmp_path, seed=2)
    greedy = SamplingParams(temperature=0, max_new_tokens=24)
    outs = {}
    for graphs in (False, True):
        engine = Engine(str(tmp_path), device="cuda", dtype="float32", max_kv_tokens=32768, cuda_graphs=graphs,
                        cuda_graph_max_batch=32)
        outs[graphs] = [o.token_ids for o in engine.generate(_prompts(batch, seed=batch), greedy)]
        assert_no_leaks(engine)
    assert outs[True] == outs[False]


def test_cuda_graphs_under_memory_pressure_and_overlap(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Retraction, chunked prefill beside graph-replayed decodes, overlap on and off: same tokens."""
    save_hf_model("llama", tmp_path, seed=4)
    greedy = SamplingParams(temperature=0, max_new_tokens=32)
    prompts = _prompts(24, seed=9)
    roomy = Engine(str(tmp_path), device="cuda", dtype="float32", max_kv_tokens=65536, cuda_graphs=False,
                   overlap=False)
    expected = [o.token_ids for o in roomy.generate(prompts, greedy)]
    tight = Engine(str(tmp_path), device="cuda", dtype="float32", max_kv_tokens=3000, chunk_size=128,
                   reserve_ratio=0.0, record_gpu_timeline=True)
    assert tight.overlap and tight.runner.graphs is not None
    got = tight.generate(prompts, greedy)
    assert [o.token_ids for o in got] == expected
    assert tight.stats().retractions > 0
    gaps = tight.gpu_idle_gaps()
    assert gaps and all(g >= 0 for g in gaps)
    assert tight.gpu_idle_gaps() == []  # read once
    assert_no_leaks(tight)
