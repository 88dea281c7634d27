"""Overlap (``EngineConfig.overlap``): a step's text is made while the next forward pass runs.

It must change when deltas arrive (one step later), never what they say: the same tokens, the same
text, the same finish reasons as without overlap, for greedy and seeded sampling, requests with and
without stop strings, aborts mid-run and requests that end on the step they were deferred. Also the
slot table, whose rows every step reads: rows are reused, rewritten when a sequence's slots change
(retraction), and all returned when requests end (``assert_no_leaks`` checks it everywhere).
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from engine import Engine, Request, SamplingParams
from engine.attention import SlotTable
from engine.errors import EngineError
from tests.helpers import assert_no_leaks

PROMPTS = ["Hello there", "Write a haiku about tools", "1, 2, 3,", "The weather in Paris is"]


def _run(engine: Engine, requests: list[Request], abort_after: dict[str, int] | None = None) -> dict[str, list]:
    """Step to the end; per request, the deltas in order (aborting some after N steps)."""
    for r in requests:
        engine.add_request(r)
    got: dict[str, list] = {r.request_id: [] for r in requests}
    steps = 0
    while engine.has_work():
        for d in engine.step():
            got[d.request_id].append(d)
        steps += 1
        for rid, after in (abort_after or {}).items():
            if steps == after and rid in engine.in_flight():
                got[rid].append(engine.abort(rid))
    return got


def _requests(tag: str) -> list[Request]:
    params = [SamplingParams(temperature=0, max_new_tokens=20),
              SamplingParams(temperature=0.9, seed=7, max_new_tokens=25),
              SamplingParams(temperature=0, max_new_tokens=30, stop=[","]),  # text can end it: never deferred
              SamplingParams(temperature=0.7, seed=3, max_new_tokens=12, min_p=0.05)]
    pairs = enumerate(zip(PROMPTS, params, strict=True))
    return [Request(prompt=p, params=sp, request_id=f"{tag}{i}") for i, (p, sp) in pairs]


@pytest.fixture(scope="module")
def engines() -> tuple[Engine, Engine]:
    return Engine("demo", overlap=False, max_kv_tokens=4096), Engine("demo", overlap=True, max_kv_tokens=4096)


def test_overlap_changes_timing_not_results(engines: tuple[Engine, Engine]) -> None:
    plain, overlapped = engines
    assert overlapped.overlap and not plain.overlap
    a = _run(plain, _requests("a"))
    b = _run(overlapped, _requests("a"))
    for rid in a:
        tokens_a = [t for d in a[rid] for t in d.token_ids]
        tokens_b = [t for d in b[rid] for t in d.token_ids]
        assert tokens_a == tokens_b
        assert "".join(d.text for d in a[rid]) == "".join(d.text for d in b[rid])
        assert a[rid][-1].finish_reason == b[rid][-1].finish_reason
        assert [d.finish_reason is not None for d in b[rid]].count(True) == 1  # one final delta, last
        assert b[rid][-1].finish_reason is not None
    # One delta per step either way: deferral shifts them by a step, it does not merge them.
    assert len(b["a0"]) == len(a["a0"])
    assert_no_leaks(plain)
    assert_no_leaks(overlapped)


def test_deltas_arrive_one_step_late_for_deferred_requests_only(engines: tuple[Engine, Engine]) -> None:
    _, engine = engines
    prompt = "Hello there, how are you today?"  # several tokens: the first step is a prefill, never run ahead
    engine.add_request(Request(prompt=prompt, params=SamplingParams(temperature=0, max_new_tokens=5),
                               request_id="late"))
    engine.add_request(Request(prompt=prompt, params=SamplingParams(temperature=0, max_new_tokens=5, stop=["zzzz"]),
                               request_id="now"))
    first = engine.step()  # prefill + first token of both
    assert [d.request_id for d in first] == ["now"]  # "late" waits for its text
    second = engine.step()  # a decode of both: runs ahead, its tokens stay on the device
    late = [d for d in second if d.request_id == "late"]
    assert len(late) == 1 and len(late[0].token_ids) == 1 and late[0].text  # the first step's token, with text
    assert [d.request_id for d in second] == ["late"]
    assert engine._ahead is not None and engine.has_work()
    third = engine.step()  # launches the next decode, then reads the second step's tokens back
    assert {d.request_id for d in third} == {"late", "now"}
    assert all(-1 not in d.token_ids for d in first + second + third)
    while engine.has_work():
        engine.step()
    assert_no_leaks(engine)


def test_run_ahead_meets_new_requests_aborts_and_endings(engines: tuple[Engine, Engine]) -> None:
    """A request arriving, one aborted and one ending while a step runs ahead: the engine reads
    the step back and falls into an ordinary step; every result equals the plain engine's."""
    plain, overlapped = engines
    results = []
    for engine in (plain, overlapped):
        params = [SamplingParams(temperature=0, max_new_tokens=n) for n in (6, 30, 30)]
        ids = ["short", "long", "cut"]
        for rid, p in zip(ids, params, strict=True):
            engine.add_request(Request(prompt=f"Request {rid}: tell me about", params=p, request_id=rid))
        got: dict[str, list] = {rid: [] for rid in [*ids, "newcomer"]}
        for step in range(200):
            for d in engine.step():
                got[d.request_id].append(d)
            if step == 4:
                engine.add_request(Request(prompt="A newcomer arrives", request_id="newcomer",
                                           params=SamplingParams(temperature=0, max_new_tokens=8)))
            if step == 9:
                got["cut"].append(engine.abort("cut"))
            if not engine.has_work():
                break
        assert_no_leaks(engine)
        results.append({rid: ([t for d in ds for t in d.token_ids], "".join(d.text for d in ds),
                              ds[-1].finish_reason) for rid, ds in got.items()})
    full = {rid: r for rid, r in results[0].items() if rid != "cut"}
    assert {rid: r for rid, r in results[1].items() if rid != "cut"} == full
    assert results[1]["short"][2] == "length" and len(results[1]["short"][0]) == 6
    cut_tokens, cut_text, reason = results[1]["cut"]
    assert reason == "abort" and -1 not in cut_tokens and cut_text == overlapped.tokenizer.decode(cut_tokens)
    # The run-ahead engine is a step behind: the aborted request has at most as many tokens.
    assert cut_tokens == results[0]["cut"][0][: len(cut_tokens)]


def test_abort_mid_run_keeps_the_deferred_text(engines: tuple[Engine, Engine]) -> None:
    plain, overlapped = engines
    results = []
    for engine in (plain, overlapped):
        got = _run(engine, [Request(prompt="Once upon a time", request_id="x",
                                    params=SamplingParams(temperature=0, max_new_tokens=40))], abort_after={"x": 6})
        deltas = got["x"]
        assert deltas[-1].finish_reason == "abort"
        results.append(("".join(d.text for d in deltas), [t for d in deltas for t in d.token_ids]))
        assert_no_leaks(engine)
    (text_a, tokens_a), (text_b, tokens_b) = results
    # Aborted after the same number of steps: the overlapped engine is at most the one run-ahead
    # token behind (dropped on abort), and its final delta carries all the text of what it kept.
    assert len(tokens_a) - 1 <= len(tokens_b) <= len(tokens_a) and tokens_b == tokens_a[: len(tokens_b)]
    assert text_b == overlapped.tokenizer.decode(tokens_b) and text_a.startswith(text_b)


def test_generate_and_retraction_with_overlap() -> None:
    """Memory pressure retracts and re-admits requests (their slot lists are replaced: the slot
    table rewrites their rows); results equal a roomy engine's."""
    prompts = [[(7 * i + j) % 500 + 10 for j in range(20 + 3 * i)] for i in range(12)]
    greedy = SamplingParams(temperature=0, max_new_tokens=24)
    roomy = Engine("demo", overlap=True, max_kv_tokens=8192)
    tight = Engine("demo", overlap=True, max_kv_tokens=300, chunk_size=16, reserve_ratio=0.0)
    expected = [o.token_ids for o in roomy.generate(prompts, greedy)]
    got = tight.generate(prompts, greedy)
    assert tight.stats().retractions > 0
    assert [o.token_ids for o in got] == expected
    assert [o.text for o in got] == [o.text for o in roomy.generate(prompts, greedy)]
    assert_no_leaks(tight)
    assert_no_leaks(roomy)


def test_slot_table_rows() -> None:
    table = SlotTable(rows=2, width=8, pad_slot=99, device=torch.device("cpu"))
    a, b, c = object(), object(), object()
    slots_a, slots_b = [5, 6, 7], [1]
    assert table.sync([(a, slots_a, 3), (b, slots_b, 1)]) == [table.row(a), table.row(b)]
    assert table.table[table.row(a), :4].tolist() == [5, 6, 7, 99]
    assert table.table[table.pad_row].tolist() == [99] * 8
    with pytest.raises(EngineError, match="slot table full"):
        table.sync([(c, [0], 1)])
    slots_a.append(8)  # a decode step: only the new slot is written
    table.sync([(a, slots_a, 4)])
    assert table.table[table.row(a), :4].tolist() == [5, 6, 7, 8]
    table.sync([(a, [40, 41], 2)])  # a new list (retraction, re-admission): rewritten from position 0
    assert table.table[table.row(a), :2].tolist() == [40, 41]
    with pytest.raises(EngineError, match="width"):
        table.sync([(b, list(range(9)), 9)])
    row_b = table.row(b)
    table.release(b)
    table.release(b)  # twice is harmless
    assert table.rows_in_use == 1
    table.sync([(c, [3], 1)])
    assert table.row(c) == row_b  # the freed row is handed out again
    assert table.table[row_b, 0].item() == 3


def test_grammar_requests_run_ahead_with_the_same_results() -> None:
    """JSON-schema and regex requests beside free ones: with overlap their masks are filled after
    the token is read back, while the next forward runs. Same tokens as without overlap."""
    from engine.constrained.spec import ConstraintSpec

    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                               "days": {"type": "integer", "minimum": 1, "maximum": 9}},
              "required": ["city", "days"], "additionalProperties": False}

    def requests(tag: str) -> list[Request]:
        return [Request(prompt="Plan a trip as JSON:", request_id=f"{tag}json",
                        constraint=ConstraintSpec(json_schema=schema),
                        params=SamplingParams(temperature=0.8, seed=5, max_new_tokens=60)),
                Request(prompt="A code:", request_id=f"{tag}re", constraint=ConstraintSpec(regex=r"[A-Z]{3}-[0-9]{4}"),
                        params=SamplingParams(temperature=0, max_new_tokens=20)),
                Request(prompt="Free text here", request_id=f"{tag}free",
                        params=SamplingParams(temperature=0, max_new_tokens=30))]
    results = []
    for overlap in (False, True):
        engine = Engine("demo", overlap=overlap, fast_forward=False, max_kv_tokens=4096)
        got = _run(engine, requests("g"))
        results.append({rid: ([t for d in ds for t in d.token_ids], "".join(d.text for d in ds), ds[-1].finish_reason)
                         for rid, ds in got.items()})
        assert_no_leaks(engine)
    assert results[0] == results[1]
    json.loads(results[1]["gjson"][1])
    assert re.fullmatch(r"[A-Z]{3}-[0-9]{4}", results[1]["gre"][1])
