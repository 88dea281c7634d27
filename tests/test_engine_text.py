"""Text-level behaviour on the demo model (real Qwen2.5 tokenizer and chat template): stop
strings, EOS, seeds, logprobs, chat with tools, streamed text."""

from __future__ import annotations

import pytest
import torch

from engine import Engine, Request, SamplingParams
from tests.helpers import ForceTokens


@pytest.fixture(scope="module")
def demo(demo_path) -> Engine:  # type: ignore[no-untyped-def]
    return Engine("demo", max_kv_tokens=8192)


def collect(engine: Engine, request: Request) -> tuple[list[str], list[int], str | None]:
    engine.add_request(request)
    pieces, ids, reason = [], [], None
    while engine.has_work():
        for d in engine.step():
            if d.request_id == request.request_id:
                pieces.append(d.text)
                ids.extend(d.token_ids)
                reason = d.finish_reason or reason
    return pieces, ids, reason


def test_demo_model_shape(demo: Engine) -> None:
    assert demo.model.config.architecture == "Qwen2ForCausalLM"
    assert demo.model.config.vocab_size == 151936 and demo.tokenizer is not None
    assert demo.tokenizer.vocab_size == 151665
    assert demo.eos_token_ids == {151645, 151643}


def test_never_samples_ids_the_tokenizer_lacks(demo: Engine) -> None:
    """The model has 151,936 logit rows but only 151,665 tokens: the padding rows are masked."""
    outs = demo.generate(["a", "b", "c", "d"], SamplingParams(max_new_tokens=64, seed=3, temperature=2.0))
    assert all(t < 151665 for o in outs for t in o.token_ids)


def test_streamed_text_never_splits_a_character(demo: Engine) -> None:
    text = "Party 🎉🎊 in 北京 — naïve café, ok? 👩‍👩‍👧"
    assert demo.tokenizer is not None
    ids = demo.tokenizer.encode(text)
    assert any("\ufffd" in demo.tokenizer.decode([t]) for t in ids)  # some tokens are partial bytes
    request = Request(prompt="Say it:", params=SamplingParams(max_new_tokens=100), constraint=ForceTokens(ids))
    pieces, out_ids, reason = collect(demo, request)
    assert out_ids == ids and reason == "stop"
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_streamed_text_is_the_decoded_output(demo: Engine) -> None:
    request = Request(prompt="Emoji 🎉 and 中文 text:", params=SamplingParams(max_new_tokens=60, seed=5))
    pieces, ids, _ = collect(demo, request)
    assert demo.tokenizer is not None
    assert "".join(pieces) == demo.tokenizer.decode(ids)


def test_stop_string_across_token_boundaries(demo: Engine) -> None:
    assert demo.tokenizer is not None
    text = "alpha beta gamma delta epsilon"
    ids = demo.tokenizer.encode(text)
    pieces = [demo.tokenizer.decode([t]) for t in ids]
    assert " beta" in pieces and " gamma" in pieces  # so "ta gam" straddles two tokens
    stop = "ta gam"

    def run(**kw: object) -> tuple[list[str], list[int], str | None]:
        params = SamplingParams(max_new_tokens=50, stop=[stop, "zzz"], **kw)  # type: ignore[arg-type]
        return collect(demo, Request(prompt="Greek:", params=params, constraint=ForceTokens(ids)))

    streamed, out_ids, reason = run()
    assert reason == "stop"
    assert "".join(streamed) == "alpha be"
    assert out_ids == ids[: pieces.index(" gamma") + 1]  # stopped at the token completing the match
    assert not any(p.endswith("t") for p in streamed)  # "t" of "ta" was held back, never sent
    out = demo.generate([Request(prompt="Greek:", params=SamplingParams(max_new_tokens=50, stop=[stop],
                                                                     include_stop_str_in_output=True),
                                 constraint=ForceTokens(ids))])[0]
    assert out.text == "alpha beta gam" and out.stop_reason == stop


def test_held_back_text_is_released_when_no_stop_follows(demo: Engine) -> None:
    assert demo.tokenizer is not None
    ids = demo.tokenizer.encode("alpha beta gamma")
    streamed, _, reason = collect(demo, Request(prompt="Greek:", params=SamplingParams(
        max_new_tokens=50, stop=["beta gone", "mmax"]), constraint=ForceTokens(ids)))
    assert reason == "stop"  # the constraint ended it, not a stop string
    assert "".join(streamed) == "alpha beta gamma"


def test_stop_token_ids_and_eos(demo: Engine) -> None:
    full = demo.generate(["Count:"], SamplingParams(temperature=0, max_new_tokens=20))[0]
    target = full.token_ids[5]
    first = full.token_ids.index(target)
    out = demo.generate(["Count:"], SamplingParams(temperature=0, max_new_tokens=20, stop_token_ids=[target]))[0]
    assert out.token_ids == full.token_ids[: first + 1]
    assert out.finish_reason == "stop" and out.stop_reason == target


def test_eos_ends_generation_unless_ignored(demo: Engine) -> None:
    """Force EOS with a constraint that only allows <|im_end|> after three free tokens."""

    class EosAfter:
        def __init__(self, n: int) -> None:
            self.n = n

        def fill_bitmask(self, bitmask: torch.Tensor) -> None:
            if self.n <= 0:
                bitmask.zero_()
                bitmask[151645 // 32] = 1 << (151645 % 32)

        def advance(self, token_id: int) -> None:
            self.n -= 1

        def is_terminated(self) -> bool:
            return False

    out = demo.generate([Request(prompt="Hi", params=SamplingParams(max_new_tokens=20, seed=1),
                                 constraint=EosAfter(3))])[0]
    assert out.token_ids[-1] == 151645 and len(out.token_ids) == 4 and out.finish_reason == "stop"
    assert "<|im_end|>" not in out.text
    ignored = demo.generate([Request(prompt="Hi", params=SamplingParams(max_new_tokens=6, seed=1, ignore_eos=True),
                                     constraint=EosAfter(3))])[0]
    assert len(ignored.token_ids) == 6 and ignored.finish_reason == "length"


def test_seed_gives_same_output_alone_and_in_a_batch(demo: Engine) -> None:
    params = SamplingParams(max_new_tokens=24, seed=1234, temperature=1.0, top_p=0.9)
    alone = demo.generate(["Once upon a time"], params)[0]
    others = [SamplingParams(max_new_tokens=30, temperature=0.8) for _ in range(5)]
    batch = demo.generate(["x", "Once upon a time", "y", "z", "w", "v"], [others[0], params, *others[1:]])
    assert batch[1].token_ids == alone.token_ids
    reseeded = demo.generate(["Once upon a time"], SamplingParams(max_new_tokens=24, seed=99, temperature=1.0))[0]
    assert reseeded.token_ids != alone.token_ids


def test_logprobs_are_those_of_the_model(demo: Engine) -> None:
    prompt = demo.tokenizer.encode("Logprobs please") if demo.tokenizer else []
    out = demo.generate([prompt], SamplingParams(max_new_tokens=8, seed=2, logprobs=True))[0]
    assert out.logprobs is not None and len(out.logprobs) == len(out.token_ids)
    logits = demo.score(prompt + out.token_ids)
    ref = torch.log_softmax(logits, dim=-1)
    for i, (tok, lp) in enumerate(zip(out.token_ids, out.logprobs, strict=True)):
        assert lp == pytest.approx(ref[len(prompt) - 1 + i, tok].item(), abs=1e-4)


def test_chat_with_tools_uses_the_template(demo: Engine) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    out = demo.generate([Request(messages=messages, tools=tools, params=SamplingParams(max_new_tokens=4))])[0]
    assert demo.tokenizer is not None
    rendered = demo.tokenizer.hf.apply_chat_template(messages, tools=tools, tokenize=False,
                                                     add_generation_prompt=True)
    assert out.prompt_tokens == len(demo.tokenizer.encode(rendered, add_special_tokens=False))
    assert "<tools>" in rendered and "get_weather" in rendered


def test_bad_messages_are_a_request_error(demo: Engine) -> None:
    from engine import InvalidRequestError

    with pytest.raises(InvalidRequestError) as info:
        demo.generate([Request(messages=[], params=SamplingParams())])
    assert info.value.field == "messages"
    with pytest.raises(InvalidRequestError, match="prompt"):
        demo.generate([""], SamplingParams())
