"""Our model code against transformers on the same checkpoints: logits and greedy generation."""

from __future__ import annotations

import json

import pytest
import torch

from engine import Engine, SamplingParams
from tests.helpers import save_hf_model

ARCHS = ["llama", "qwen2", "qwen3", "mistral"]


def prompts(n: int = 8, vocab: int = 512, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = [1, 3, 7, 12, 20, 33, 48, 61][:n]
    return [torch.randint(0, vocab, (length,), generator=g).tolist() for length in lengths]


@pytest.fixture(scope="module", params=ARCHS)
def checkpoint(request, make_checkpoint):  # type: ignore[no-untyped-def]
    return request.param, *make_checkpoint(request.param)


def hf_logits(model, ids: list[int]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def test_score_matches_transformers(checkpoint) -> None:  # type: ignore[no-untyped-def]
    arch, path, model = checkpoint
    engine = Engine(str(path), max_kv_tokens=2048)
    ids = torch.randint(0, 512, (150,), generator=torch.Generator().manual_seed(7)).tolist()
    ours = engine.score(ids)
    ref = hf_logits(model, ids)
    assert ours.shape == (150, 512) and ours.dtype == torch.float32
    assert (ours - ref).abs().max().item() <= 1e-4, arch


def test_greedy_generation_matches_transformers(checkpoint) -> None:  # type: ignore[no-untyped-def]
    arch, path, model = checkpoint
    engine = Engine(str(path), max_kv_tokens=4096)
    batch = prompts()
    outputs = engine.generate(batch, SamplingParams(temperature=0, max_new_tokens=32))
    for ids, out in zip(batch, outputs, strict=True):
        with torch.no_grad():
            ref = model.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False,
                                 attention_mask=torch.ones(1, len(ids), dtype=torch.long))
        assert out.token_ids == ref[0, len(ids):].tolist(), (arch, len(ids))
        assert out.finish_reason == "length"


def test_sliding_window_is_applied(make_checkpoint) -> None:  # type: ignore[no-untyped-def]
    """Mistral with a 16-token window: past 16 tokens the result must differ from full attention,
    and match transformers (which applies the window)."""
    path, model = make_checkpoint("mistral", seed=3)
    ids = torch.randint(0, 512, (60,), generator=torch.Generator().manual_seed(2)).tolist()
    windowed = Engine(str(path), max_kv_tokens=512).score(ids)
    config = json.loads((path / "config.json").read_text())
    config["sliding_window"] = None
    (path / "config.json").write_text(json.dumps(config))
    full = Engine(str(path), max_kv_tokens=512).score(ids)
    assert (windowed[:16] - full[:16]).abs().max() < 1e-5  # inside the window: identical
    assert (windowed[20:] - full[20:]).abs().max() > 1e-3  # beyond it: the window matters
    assert (windowed - hf_logits(model, ids)).abs().max() <= 1e-4


def test_sharded_checkpoint_loads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = save_hf_model("qwen2", tmp_path, seed=5, max_shard_size="60KB")
    shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").is_file()
    ids = list(range(3, 90))
    ours = Engine(str(tmp_path), max_kv_tokens=512).score(ids)
    assert (ours - hf_logits(model, ids)).abs().max() <= 1e-4


def test_transformers_4_config_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A config.json in the 4.x layout (rope_theta / rope_scaling with "type" / torch_dtype)."""
    model = save_hf_model("llama", tmp_path, seed=9)
    config = json.loads((tmp_path / "config.json").read_text())
    rope = config.pop("rope_parameters")
    config["rope_theta"] = rope.pop("rope_theta")
    config["rope_scaling"] = {"type": rope.pop("rope_type"), **rope}
    config["torch_dtype"] = config.pop("dtype")
    (tmp_path / "config.json").write_text(json.dumps(config))
    ids = list(range(100, 300))
    ours = Engine(str(tmp_path), max_kv_tokens=512).score(ids)
    assert (ours - hf_logits(model, ids)).abs().max() <= 1e-4


def test_llama_with_biases_and_tied_embeddings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = save_hf_model("llama", tmp_path, seed=4, attention_bias=True, mlp_bias=True,
                          tie_word_embeddings=True)
    ids = list(range(0, 512, 5))
    ours = Engine(str(tmp_path), max_kv_tokens=512).score(ids)
    assert (ours - hf_logits(model, ids)).abs().max() <= 1e-4


def test_bfloat16_weights_track_float32(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    path, model = tiny_llama
    ids = list(range(1, 120))
    ours = Engine(str(path), dtype="bfloat16", max_kv_tokens=512).score(ids)
    ref = hf_logits(model, ids)
    assert ours.dtype == torch.float32
    # bf16 keeps ~3 significant digits; the logits here are O(1).
    assert (ours - ref).abs().max() < 0.1
    assert (ours.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9
