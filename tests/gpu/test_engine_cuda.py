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
