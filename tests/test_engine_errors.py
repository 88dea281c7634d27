"""Abort at any moment frees everything; bad input is a clear error naming the field, and the
engine keeps serving everyone else."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from engine import (
    Engine,
    InvalidRequestError,
    ModelLoadError,
    Request,
    RequestNotFoundError,
    SamplingParams,
    UnsupportedArchitectureError,
)
from tests.helpers import assert_no_leaks

GREEDY = SamplingParams(temperature=0, max_new_tokens=16)


def tokens(n: int, seed: int) -> list[int]:
    return torch.randint(0, 512, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.fixture
def engine(tiny_llama) -> Engine:  # type: ignore[no-untyped-def]
    path, _ = tiny_llama
    return Engine(str(path), max_kv_tokens=1024, chunk_size=16, max_model_len=512)


def run_to_end(engine: Engine) -> None:
    while engine.has_work():
        engine.step()


def test_abort_during_prefill_and_decode_leaks_nothing(engine: Engine) -> None:
    bystander = Request(prompt=tokens(30, 1), params=GREEDY)
    expected = engine.generate([Request(prompt=bystander.prompt, params=GREEDY)])[0].token_ids
    outputs: dict[str, list[int]] = {}

    def step() -> None:
        for d in engine.step():
            outputs.setdefault(d.request_id, []).extend(d.token_ids)

    long_prompt = engine.add_request(Request(prompt=tokens(100, 2), params=GREEDY))
    decoding = engine.add_request(Request(prompt=tokens(5, 3), params=GREEDY))
    engine.add_request(bystander)
    step()
    step()
    assert engine.sequence(long_prompt).num_computed < 100  # mid-prefill (16-token chunks)
    assert engine.abort(long_prompt).finish_reason == "abort"
    for _ in range(3):
        step()
    assert engine.sequence(decoding).num_output > 0  # mid-decode
    assert engine.abort(decoding).finish_reason == "abort"
    while engine.has_work():
        step()
    assert outputs[bystander.request_id] == expected  # the others never noticed
    assert_no_leaks(engine)
    with pytest.raises(RequestNotFoundError):
        engine.abort(long_prompt)


def test_abort_while_waiting(engine: Engine) -> None:
    rid = engine.add_request(Request(prompt=tokens(10, 4), params=GREEDY))
    assert engine.abort(rid).finish_reason == "abort"
    assert not engine.has_work()
    assert_no_leaks(engine)


@pytest.mark.parametrize(("make", "field"), [
    (lambda: Request(prompt=[], params=GREEDY), "prompt"),
    (lambda: Request(prompt=tokens(600, 5), params=GREEDY), "prompt"),  # context is 512
    (lambda: Request(prompt=[1, 2, 99999], params=GREEDY), "prompt"),
    (lambda: Request(prompt="text needs a tokenizer", params=GREEDY), "prompt"),
    (lambda: Request(params=GREEDY), "prompt"),
    (lambda: Request(prompt=[1], params=SamplingParams(max_new_tokens=0)), "max_new_tokens"),
    (lambda: Request(prompt=[1], params=SamplingParams(top_p=0.0)), "top_p"),
    (lambda: Request(prompt=[1], params=SamplingParams(top_p=1.5)), "top_p"),
    (lambda: Request(prompt=[1], params=GREEDY, constraint=object()), "constraint"),
])
def test_bad_requests_name_the_field_and_engine_keeps_serving(engine: Engine, make, field) -> None:  # type: ignore[no-untyped-def]
    survivor = engine.add_request(Request(prompt=tokens(20, 6), params=GREEDY))
    engine.step()
    with pytest.raises(InvalidRequestError) as info:
        engine.add_request(make())
    assert info.value.field == field
    assert field in str(info.value)
    run_to_end(engine)
    assert survivor not in engine.in_flight()
    assert_no_leaks(engine)


def test_prompt_larger_than_kv_pool(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_llama
    engine = Engine(str(path), max_kv_tokens=64)
    with pytest.raises(InvalidRequestError, match="KV pool"):
        engine.generate([tokens(100, 7)], GREEDY)


def test_generation_stops_at_context_length(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_llama
    engine = Engine(str(path), max_kv_tokens=256, max_model_len=40)
    out = engine.generate([tokens(30, 8)], SamplingParams(temperature=0, max_new_tokens=100))[0]
    assert out.finish_reason == "length" and len(out.token_ids) == 10


def test_unknown_model_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelLoadError) as info:
        Engine(str(tmp_path / "no-such-model"))
    assert info.value.field == "model" and "no-such-model" in str(info.value)


def test_unsupported_architecture_is_named(tmp_path, tiny_llama) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_llama
    for f in path.iterdir():
        shutil.copy(f, tmp_path / f.name)
    config = json.loads((tmp_path / "config.json").read_text())
    config["architectures"], config["model_type"] = ["GPT2LMHeadModel"], "gpt2"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedArchitectureError) as info:
        Engine(str(tmp_path))
    message = str(info.value)
    assert "GPT2LMHeadModel" in message and "LlamaForCausalLM" in message  # what it is, what works


def test_missing_weights_are_reported(tmp_path, tiny_llama) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import load_file, save_file

    path, _ = tiny_llama
    shutil.copy(path / "config.json", tmp_path / "config.json")
    weights = load_file(str(path / "model.safetensors"))
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"layers\.1\.mlp"):
        Engine(str(tmp_path))


@pytest.mark.parametrize(("option", "value"), [("device", "tpu"), ("chunk_size", 0), ("max_kv_tokens", -5),
                                               ("reserve_ratio", 2.0), ("session_ttl", 0),
                                               ("prefill_attention", "flash")])
def test_bad_engine_options(tiny_llama, option: str, value: object) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_llama
    with pytest.raises(ValueError, match=option):
        Engine(str(path), **{option: value})


def test_triton_prefill_on_cpu_needs_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.config import EngineConfig

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="prefill_attention='triton' needs a CUDA device"):
        EngineConfig(prefill_attention="triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # interpreted on CPU: accepted (tests/test_extend_kernel.py runs it)
    assert EngineConfig(prefill_attention="triton").prefill_attention == "triton"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_llama
    with pytest.raises(ValueError, match="CUDA is not available"):
        Engine(str(path), device="cuda")
