"""Tokenizer wrapper, incremental detokenization, stop strings and chat templates on real tokenizers.

Expectations are derived independently of the code under test: from decoding the whole token
sequence at once, from transformers' own tokenizer, or from the definition of a stop string.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from engine.errors import InvalidRequestError
from engine.tokenizer import IncrementalDetokenizer, OutputText, Tokenizer

ROOT = Path(__file__).resolve().parents[1]
QWEN = ROOT / "engine" / "assets" / "qwen2.5"
GPT2 = ROOT.parent / "shared" / "data" / "tokenizers" / "gpt2"

IM_END = 151645
ENDOFTEXT = 151643


@pytest.fixture(scope="module")
def qwen() -> Tokenizer:
    return Tokenizer(QWEN)


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    if not (GPT2 / "tokenizer.json").is_file():
        pytest.skip(f"no GPT-2 tokenizer at {GPT2}")
    return Tokenizer(GPT2)


@pytest.fixture(scope="module")
def qwen_hf():  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(QWEN))


# ---- helpers ------------------------------------------------------------------------------------


class Stream:
    """Drive an OutputText the way the engine does: push, release after every token, final release."""

    def __init__(self, tok: Tokenizer, prompt_ids: Sequence[int], stop: Sequence[str] = (),
                 include_stop: bool = False) -> None:
        self.out = OutputText(IncrementalDetokenizer(tok, prompt_ids, skip_special_tokens=True), stop, include_stop)
        self.pieces: list[str] = []
        self.hit: str | None = None

    @property
    def released(self) -> str:
        return "".join(self.pieces)

    def push(self, token_id: int) -> str | None:
        assert self.hit is None, "pushed past a stop"
        self.hit = self.out.push(token_id)
        self.pieces.append(self.out.release(final=self.hit is not None))
        return self.hit

    def finish(self) -> None:
        self.out.finish()
        self.pieces.append(self.out.release(final=True))


def run_stream(tok: Tokenizer, prompt_ids: Sequence[int], output_ids: Sequence[int], **kwargs) -> Stream:  # type: ignore[no-untyped-def]
    s = Stream(tok, prompt_ids, **kwargs)
    for t in output_ids:
        if s.push(t) is not None:
            return s
    s.finish()
    return s


def stop_prefix_tail(text: str, stops: Sequence[str]) -> bool:
    """Does ``text`` end with a non-empty proper prefix of one of ``stops``?"""
    return any(text.endswith(s[:n]) for s in stops for n in range(1, len(s)))


TEXTS = [
    "Hello 👋🏽 world! 🧑‍🚀 rocket",
    "😀😃😄 𝄞 ∑ ok",
    "日本語のテキストと中文文本，还有한국어.",
    "naïve café, façade, Ångström, Dvořák — “quotes” ¿qué? ñandú",
    "line one\n\n\tindented\r\n  two spaces  \n\n\n   trailing   ",
    "mixed: 🇫🇷 flag, 👨‍👩‍👧‍👦 family, é (e + U+0301), 𝔘𝔫𝔦𝔠𝔬𝔡𝔢\t\t end",
    "code:\n```python\ndef f(x):\n    return x  # ✓\n```\n",
]


# ---- incremental detokenization -----------------------------------------------------------------


def test_some_token_alone_is_half_a_character(qwen: Tokenizer) -> None:
    """The texts really exercise byte-level splits: some tokens decode alone to U+FFFD."""
    for text in (TEXTS[0], TEXTS[1], TEXTS[5]):
        ids = qwen.encode(text)
        assert any("\ufffd" in qwen.decode([t]) for t in ids), text
        assert qwen.decode(ids) == text


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("prompt", ["", "Prompt: ", "chat"])
def test_incremental_equals_full_decode(qwen: Tokenizer, text: str, prompt: str) -> None:
    if prompt == "chat":
        prompt_ids = qwen.encode_chat([{"role": "user", "content": "Say something."}])
    else:
        prompt_ids = qwen.encode(prompt)
    output_ids = qwen.encode(text)
    expected = qwen.decode(output_ids)
    assert expected == text  # byte-level BPE round-trips

    s = Stream(qwen, prompt_ids)
    for k, t in enumerate(output_ids, start=1):
        assert s.push(t) is None
        so_far = qwen.decode(output_ids[:k])
        assert expected.startswith(s.released)
        if not so_far.endswith("\ufffd"):
            # Nothing is delayed once the text so far is complete characters.
            assert s.released == so_far
    s.finish()
    assert s.released == expected
    assert all("\ufffd" not in piece for piece in s.pieces), s.pieces


@pytest.mark.parametrize("text", TEXTS)
def test_incremental_gpt2(gpt2: Tokenizer, text: str) -> None:
    prompt_ids = gpt2.encode("Once upon a time")
    output_ids = gpt2.encode(text)
    s = run_stream(gpt2, prompt_ids, output_ids)
    assert s.released == gpt2.decode(output_ids) == text
    assert all("\ufffd" not in piece for piece in s.pieces)


def test_incremental_with_added_and_special_tokens(qwen: Tokenizer) -> None:
    """Non-special added tokens (<tool_call>) are kept, special ones (<|im_end|>) are skipped."""
    body = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "東京 🌧"}}\n</tool_call>'
    output_ids = [*qwen.encode(body), IM_END]
    assert 151657 in output_ids and 151658 in output_ids  # <tool_call>, </tool_call> as single tokens
    prompt_ids = qwen.encode_chat([{"role": "user", "content": "weather?"}])
    s = run_stream(qwen, prompt_ids, output_ids)
    assert s.released == qwen.decode(output_ids) == body
    assert all("\ufffd" not in piece for piece in s.pieces)


def test_special_token_in_the_middle(qwen: Tokenizer) -> None:
    output_ids = [*qwen.encode("before 🙂"), ENDOFTEXT, *qwen.encode(" after")]
    s = run_stream(qwen, [], output_ids)
    assert s.released == qwen.decode(output_ids) == "before 🙂 after"


def test_incomplete_character_at_the_end_is_flushed(qwen: Tokenizer) -> None:
    """Generation that ends mid-character still hands over what decode() gives, at finish."""
    ids = qwen.encode("ok 🧑")
    cut = ids[:-1]
    assert qwen.decode(cut).endswith("\ufffd")  # the last token completes the emoji
    s = Stream(qwen, qwen.encode("x"))
    for t in cut:
        s.push(t)
    assert "\ufffd" not in s.released
    s.finish()
    assert s.released == qwen.decode(cut)


def test_incremental_random_tokens(qwen: Tokenizer) -> None:
    """Random outputs, half of them tokens that are partial UTF-8 alone (as a random model emits):
    the streamed text is always exactly the full decode, and never runs ahead of a complete character."""
    rng = random.Random(0)
    partial = [t for t in range(0, 151643, 31) if "\ufffd" in qwen.decode([t])]
    assert len(partial) > 30
    prompt_ids = qwen.encode("A prompt that ends in complete characters: 日本")
    for _ in range(300):
        output_ids = [rng.choice(partial) if rng.random() < 0.5 else rng.randrange(qwen.vocab_size)
                      for _ in range(rng.randrange(1, 16))]
        s = Stream(qwen, prompt_ids)
        for k, t in enumerate(output_ids, start=1):
            s.push(t)
            so_far = qwen.decode(output_ids[:k])
            assert so_far.startswith(s.released)
            if not so_far.endswith("\ufffd"):
                assert s.released == so_far
        s.finish()
        assert s.released == qwen.decode(output_ids), output_ids


# ---- stop strings -------------------------------------------------------------------------------


def assert_straddles(tok: Tokenizer, ids: Sequence[int], stop: str) -> None:
    """No single token holds the stop string: it is only found across token boundaries."""
    assert stop in tok.decode(ids)
    assert all(stop not in tok.decode([t]) for t in ids)


@pytest.mark.parametrize("include_stop", [False, True])
def test_stop_string_across_tokens(qwen: Tokenizer, include_stop: bool) -> None:
    stop = "</answer>"
    before = "The answer is 42."
    ids = qwen.encode(before + stop + " and then more text </answer> again")
    assert_straddles(qwen, ids, stop)
    expected = before + (stop if include_stop else "")

    s = Stream(qwen, qwen.encode("Q: "), stop=[stop], include_stop=include_stop)
    for t in ids:
        if s.push(t) is not None:
            break
        # Released text is always a prefix of the final text: a stop prefix is never let out early.
        assert before.startswith(s.released), s.released
    assert s.hit == stop
    assert s.out.text == expected
    assert s.released == expected


def test_held_back_text_that_is_not_a_stop_is_released(qwen: Tokenizer) -> None:
    stop = "</answer>"
    text = "x </ans y </answ z </answer> tail"
    final = text[: text.index(stop)]
    ids = qwen.encode(text)
    assert_straddles(qwen, ids, stop)

    s = Stream(qwen, [], stop=[stop])
    held_at_some_point = False
    for k, t in enumerate(ids, start=1):
        if s.push(t) is not None:
            break
        so_far = qwen.decode(ids[:k])
        assert final.startswith(s.released)
        if stop_prefix_tail(so_far, [stop]):
            held_at_some_point = True
            assert s.released != so_far  # the possible stop prefix is held back
            assert so_far.startswith(s.released)
        else:
            assert s.released == so_far  # everything not possibly a stop is out
    assert held_at_some_point
    assert s.hit == stop
    assert s.released == final
    assert "</ans y </answ z " in s.released


def test_held_back_tail_released_at_finish(qwen: Tokenizer) -> None:
    stop = "</answer>"
    text = "almost a stop: </answ"
    ids = qwen.encode(text)
    s = Stream(qwen, [], stop=[stop])
    for t in ids:
        assert s.push(t) is None
    assert s.released == text[: text.index("</answ")]  # tail held while it could become the stop
    s.finish()
    assert s.hit is None
    assert s.released == text


@pytest.mark.parametrize("stops", [["world", "o w"], ["o w", "world"]])
def test_earliest_stop_wins(qwen: Tokenizer, stops: list[str]) -> None:
    """Both stops complete on the same token; the one that starts first in the text wins."""
    ids = qwen.encode("hello world, goodbye")
    s = Stream(qwen, [], stop=stops)
    pushed = 0
    for t in ids:
        pushed += 1
        if s.push(t) is not None:
            break
    text_at_hit = qwen.decode(ids[:pushed])
    assert "world" in text_at_hit and "o w" in text_at_hit  # both are there when the stop fires
    assert s.hit == "o w"
    assert s.released == s.out.text == "hell"


def test_earliest_stop_wins_include_stop(qwen: Tokenizer) -> None:
    ids = qwen.encode("hello world, goodbye")
    s = run_stream(qwen, [], ids, stop=["world", "o w"], include_stop=True)
    assert s.hit == "o w"
    assert s.released == "hello w"


def test_emoji_stop_string_split_across_tokens(qwen: Tokenizer) -> None:
    stop = "🧑"
    ids = qwen.encode("plain text then 🧑‍🚀 after")
    assert any("\ufffd" in qwen.decode([t]) for t in ids)
    s = run_stream(qwen, [], ids, stop=[stop])
    assert s.hit == stop
    assert s.released == "plain text then "
    assert all("\ufffd" not in piece for piece in s.pieces)


def test_multi_token_stop_string(qwen: Tokenizer) -> None:
    """A stop several tokens long: it begins in text already searched and ends in new text."""
    stop = "STOP HERE NOW"
    ids = qwen.encode("prefix words STOP HERE NOW suffix")
    assert_straddles(qwen, ids, stop)
    assert len([t for t in ids if qwen.decode([t]).strip() in ("STOP", "HERE", "NOW")]) >= 2
    s = run_stream(qwen, [], ids, stop=[stop, "never"])
    assert s.hit == stop
    assert s.released == "prefix words "


def test_stop_strings_random(qwen: Tokenizer) -> None:
    """Random text over a small alphabet, so stops and near-stops are frequent. Reference: the stop
    fires on the first token after which some stop string occurs in the decoded text, and the text
    is cut at the earliest occurrence then; released text is always a prefix of the final text."""
    rng = random.Random(1)
    words = ["ab", "ba", " ", "a", "b", "</", "stop", "st", "op", ">", "\n", "aab"]
    for _ in range(300):
        text = "".join(rng.choice(words) for _ in range(rng.randrange(1, 25)))
        stops = rng.sample(["ab b", "</stop>", "aaa", "b\na", "top>", "st"], rng.randrange(1, 4))
        include = rng.random() < 0.5
        ids = qwen.encode(text)

        expected, expected_hit = qwen.decode(ids), None
        for k in range(1, len(ids) + 1):
            so_far = qwen.decode(ids[:k])
            found = [(so_far.find(x), x) for x in stops if x in so_far]
            if found:
                at, expected_hit = min(found)
                expected = so_far[: at + (len(expected_hit) if include else 0)]
                break

        s = Stream(qwen, [], stop=stops, include_stop=include)
        for k, t in enumerate(ids, start=1):
            if s.push(t) is not None:
                break
            assert expected.startswith(s.released), (text, stops)
            if not stop_prefix_tail(qwen.decode(ids[:k]), stops):
                assert s.released == qwen.decode(ids[:k])
        else:
            s.finish()
        assert s.hit == expected_hit, (text, stops)
        assert s.released == s.out.text == expected, (text, stops)


# ---- chat template ------------------------------------------------------------------------------

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. 東京"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "search", "description": "Web search.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}},
]

MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "What's the weather in Tokyo? 🌧"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "id": "call_1",
         "function": {"name": "get_weather", "arguments": {"city": "Tokyo", "unit": "celsius"}}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 18, "sky": "rain"}'},
    {"role": "assistant", "content": "18 °C and raining."},
    {"role": "user", "content": "Thanks. And in Paris?"},
]


def hf_ids(result) -> list[int]:  # type: ignore[no-untyped-def]
    """transformers returns a list or (newer versions) a BatchEncoding for tokenize=True."""
    if isinstance(result, list):
        return [int(t) for t in result]
    return [int(t) for t in result["input_ids"]]


def test_chat_template_with_tools_matches_transformers(qwen: Tokenizer, qwen_hf) -> None:  # type: ignore[no-untyped-def]
    ours = qwen.apply_chat_template(MESSAGES, tools=TOOLS)
    ref = qwen_hf.apply_chat_template(MESSAGES, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    assert ours == ref
    # The Qwen2.5 template lists the tools, as JSON, in a <tools> block of the system turn.
    assert ours.startswith("<|im_start|>system\nYou are a terse assistant.")
    block = ours[ours.index("<tools>\n") + len("<tools>\n"): ours.index("\n</tools>")]
    assert [json.loads(line) for line in block.split("\n")] == TOOLS
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Tokyo", "unit": "celsius"}}\n</tool_call>' \
        in ours
    assert "<tool_response>\n{\"temp\": 18" in ours
    assert ours.endswith("<|im_start|>user\nThanks. And in Paris?<|im_end|>\n<|im_start|>assistant\n")


def test_chat_template_without_tools_and_without_generation_prompt(qwen: Tokenizer, qwen_hf) -> None:  # type: ignore[no-untyped-def]
    messages = [{"role": "user", "content": "hi"}]
    ours = qwen.apply_chat_template(messages, add_generation_prompt=False)
    ref = qwen_hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert ours == ref
    assert "<tools>" not in ours
    assert not ours.endswith("<|im_start|>assistant\n")


def test_encode_chat_matches_transformers(qwen: Tokenizer, qwen_hf) -> None:  # type: ignore[no-untyped-def]
    ours = qwen.encode_chat(MESSAGES, tools=TOOLS)
    ref = hf_ids(qwen_hf.apply_chat_template(MESSAGES, tools=TOOLS, tokenize=True, add_generation_prompt=True))
    assert ours == ref
    # Role markers are single special tokens, not spelled out.
    # <|im_start|>: system, user, assistant, tool (as user), assistant, user, and the generation prompt
    assert ours.count(151644) == 7
    assert ours[-3:] == qwen_hf.encode("<|im_start|>assistant\n", add_special_tokens=False)


def test_no_chat_template_raises(gpt2: Tokenizer) -> None:
    assert not gpt2.has_chat_template
    with pytest.raises(InvalidRequestError) as info:
        gpt2.apply_chat_template([{"role": "user", "content": "hi"}])
    assert info.value.field == "messages"
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidRequestError) as info:
        gpt2.encode_chat([{"role": "user", "content": "hi"}])
    assert info.value.field == "messages"


def test_broken_messages_raise_invalid_request(qwen: Tokenizer) -> None:
    with pytest.raises(InvalidRequestError) as info:
        qwen.apply_chat_template([{"role": "user"}])  # no content: the template concatenates None
    assert info.value.field == "messages"


# ---- EOS ----------------------------------------------------------------------------------------


def copy_qwen(dst: Path) -> Path:
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (QWEN / name).is_file():
            shutil.copy(QWEN / name, dst / name)
    return dst


def test_eos_from_generation_config(tmp_path: Path) -> None:
    path = copy_qwen(tmp_path)
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [IM_END, ENDOFTEXT],
                                                            "bos_token_id": ENDOFTEXT}))
    tok = Tokenizer(path)
    assert set(tok.eos_token_ids) == {IM_END, ENDOFTEXT}
    assert len(tok.eos_token_ids) == 2


def test_eos_single_int_in_generation_config(tmp_path: Path) -> None:
    path = copy_qwen(tmp_path)
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": ENDOFTEXT}))
    assert tuple(Tokenizer(path).eos_token_ids) == (ENDOFTEXT,)


def test_eos_falls_back_to_tokenizer(tmp_path: Path, qwen_hf) -> None:  # type: ignore[no-untyped-def]
    path = copy_qwen(tmp_path)
    tok = Tokenizer(path)
    expected = qwen_hf.convert_tokens_to_ids(json.loads((QWEN / "tokenizer_config.json").read_text())["eos_token"])
    assert expected == IM_END
    assert tuple(tok.eos_token_ids) == (expected,)


def test_eos_gpt2(gpt2: Tokenizer) -> None:
    assert tuple(gpt2.eos_token_ids) == (gpt2.hf.convert_tokens_to_ids("<|endoftext|>"),) == (50256,)


# ---- encode / decode against transformers, threads ----------------------------------------------


def test_encode_decode_match_transformers(qwen: Tokenizer, qwen_hf) -> None:  # type: ignore[no-untyped-def]
    for text in [*TEXTS, "<|im_start|>user\nhi<|im_end|>"]:
        ids = qwen.encode(text)
        assert ids == qwen_hf.encode(text)
        assert qwen.decode(ids) == qwen_hf.decode(ids, skip_special_tokens=True)
        assert qwen.decode(ids, skip_special_tokens=False) == qwen_hf.decode(ids, skip_special_tokens=False)
    assert qwen.vocab_size == len(qwen_hf) == 151665


def test_concurrent_encode_matches_serial(qwen: Tokenizer) -> None:
    texts = [f"{i}: {TEXTS[i % len(TEXTS)]} " * (1 + i % 7) for i in range(200)]
    serial = [qwen.encode(t) for t in texts]
    barrier = threading.Barrier(8)

    def work(offset: int) -> list[list[int]]:
        barrier.wait()
        order = texts[offset:] + texts[:offset]
        out = [qwen.encode(t) for t in order]
        return out[len(texts) - offset:] + out[:len(texts) - offset]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, [i * 25 for i in range(8)]))
    for result in results:
        assert result == serial


@pytest.mark.parametrize("name", ["qwen", "gpt2"])
def test_token_bytes_spell_the_text_even_mid_character(name: str, request: pytest.FixtureRequest) -> None:
    tok: Tokenizer = request.getfixturevalue(name)
    text = "héllo wörld ఇది తెలుగు 日本語 🙂\n\ttabs  and spaces"
    ids = tok.encode(text, add_special_tokens=False)
    pieces = [tok.token_bytes(t) for t in ids]
    assert b"".join(pieces) == text.encode()
    halves = [p for t, p in zip(ids, pieces, strict=True) if "\ufffd" in tok.decode([t])]
    assert halves and all(b"\xef\xbf\xbd" not in p for p in halves)  # their own bytes, not U+FFFD's
