"""What one request's bad parameters or failing constraint may do to the others: nothing.

A grammar that hits llguidance's parser limits, or admits no output at all, ends its own request with
``finish_reason="error"`` (``AsyncEngine`` raises ``InvalidRequestError``) while the batch goes on.
Sampling parameters at the edges of their ranges (a temperature that is 0 in float32, a top_p that
rounds to 0, a top_k past int64) sample like their limits instead of producing NaN or a padding token.
And when a step does fail with a run-ahead step in flight, ``recover`` frees every slot and lock.
"""

from __future__ import annotations

import anyio
import pytest

from engine import AsyncEngine, Engine, InvalidRequestError, Request, SamplingParams
from engine.constrained.spec import ConstraintSpec
from tests.helpers import assert_no_leaks

BLOWUP = {"type": "string", "pattern": "^(c{999}){1001}$"}  # llguidance: "too many expressions constructed"
NOTHING = r"[^\s\S]"  # no character matches: the grammar admits no output


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine("demo", max_kv_tokens=4096)


def test_a_failing_grammar_ends_its_own_request_only(engine: Engine) -> None:
    greedy = SamplingParams(temperature=0, max_new_tokens=8)
    alone = engine.generate([Request(prompt="Tell me about tools", params=greedy)])[0]
    outputs = engine.generate([
        Request(prompt="hi", params=greedy, constraint=ConstraintSpec(json_schema=BLOWUP)),
        Request(prompt="Tell me about tools", params=greedy),
        Request(prompt="hi", params=greedy, constraint=ConstraintSpec(regex=NOTHING)),
        Request(prompt="hi", params=greedy, constraint=ConstraintSpec(json_schema={"$ref": "#"})),
    ])
    failed = [outputs[0], outputs[2], outputs[3]]
    assert [o.finish_reason for o in failed] == ["error"] * 3
    assert "too many expressions" in (outputs[0].error or "")
    assert all(o.error and o.error.startswith("the output constraint failed") for o in failed)
    assert all(o.json is None for o in failed)  # no value claimed for an output that never completed
    assert outputs[1].finish_reason == "length" and outputs[1].error is None
    assert outputs[1].token_ids == alone.token_ids  # the batch's failures did not touch it
    assert_no_leaks(engine)


def test_the_async_engine_raises_for_the_failed_request_and_serves_the_other(engine: Engine) -> None:
    async def main() -> tuple[BaseException | None, str | None]:
        async_engine = AsyncEngine(engine=engine)
        failure: BaseException | None = None
        finish: str | None = None
        params = SamplingParams(temperature=0, max_new_tokens=8)

        async def bad() -> None:
            nonlocal failure
            try:
                await async_engine.generate(Request(prompt="hi", params=params,
                                                    constraint=ConstraintSpec(json_schema=BLOWUP)))
            except InvalidRequestError as e:
                failure = e

        async def good() -> None:
            nonlocal finish
            finish = (await async_engine.generate(Request(prompt="Hello", params=params))).finish_reason

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(bad)
                tg.start_soon(good)
        finally:
            await async_engine.aclose()
        return failure, finish

    failure, finish = anyio.run(main)
    assert isinstance(failure, InvalidRequestError) and failure.field == "constraint"
    assert "too many expressions" in str(failure)
    assert finish == "length"


@pytest.mark.parametrize("edge", [{"temperature": 1e-45}, {"temperature": 1e-30}, {"top_p": 1e-300},
                                  {"top_p": 1e-300, "top_k": 2**70}])
def test_sampling_at_the_edges_of_the_ranges_acts_like_the_limit(engine: Engine, edge: dict[str, float]) -> None:
    """A temperature too small for float32 and a top_p that rounds to 0 keep the top token only: greedy."""
    prompt = "The weather in Paris is"
    greedy = engine.generate([Request(prompt=prompt, params=SamplingParams(temperature=0, max_new_tokens=6))])[0]
    params = SamplingParams(**{"temperature": 1.0, "seed": 5, "max_new_tokens": 6, **edge})  # type: ignore[arg-type]
    edged = engine.generate([Request(prompt=prompt, params=params)])[0]
    assert edged.token_ids == greedy.token_ids


def test_a_top_k_past_int64_is_no_truncation(engine: Engine) -> None:
    prompt = "Write a haiku about tools"
    outputs = engine.generate([Request(prompt=prompt, params=SamplingParams(seed=11, max_new_tokens=6, top_k=k))
                               for k in (0, 2**70)])
    assert outputs[0].token_ids == outputs[1].token_ids


class _FailsOnThirdToken:
    """Allows every token; its third ``advance`` raises (any step failure: a device error, a bug)."""

    def __init__(self) -> None:
        self.n = 0

    def fill_bitmask(self, bitmask: object) -> None:
        pass  # the row arrives with every bit set

    def advance(self, token_id: int) -> None:
        self.n += 1
        if self.n == 3:
            raise RuntimeError("constraint failure")

    def is_terminated(self) -> bool:
        return False


def test_recover_after_a_failed_run_ahead_step_frees_everything() -> None:
    """With overlap, a request past its prefill holds a run-ahead placeholder whose slot is taken: recovery
    must give that slot back too, and end every request in flight."""
    engine = Engine("demo", overlap=True, max_kv_tokens=1024)
    greedy = SamplingParams(temperature=0, max_new_tokens=20)
    engine.add_request(Request(prompt="Hello there", params=greedy, constraint=_FailsOnThirdToken()))
    engine.add_request(Request(prompt="The weather in Paris is", params=greedy))
    with pytest.raises(RuntimeError, match="constraint failure"):
        while engine.has_work():
            engine.step()
    deltas = engine.recover()
    assert len(deltas) == 2 and all(d.finish_reason == "abort" for d in deltas)
    assert_no_leaks(engine)
    after = engine.generate([Request(prompt="Hello there", params=SamplingParams(temperature=0, max_new_tokens=4))])
    assert after[0].finish_reason == "length"  # and it serves again
    assert_no_leaks(engine)
