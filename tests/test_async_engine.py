"""AsyncEngine from an anyio task group: many streams at once, an event loop that never stalls,
abort and cancellation, errors that reach the caller without hurting anyone else."""

from __future__ import annotations

import time

import anyio
import pytest

from engine import AsyncEngine, Engine, EngineClosedError, InvalidRequestError, Request, SamplingParams
from tests.helpers import assert_no_leaks


@pytest.fixture(scope="module")
def demo_engine(demo_path) -> Engine:  # type: ignore[no-untyped-def]
    return Engine("demo", max_kv_tokens=16384)


@pytest.mark.slow
def test_hundred_concurrent_streams_and_a_responsive_loop(demo_engine: Engine,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    engine = AsyncEngine(engine=demo_engine)
    results: dict[int, tuple[list[int], str, str | None]] = {}
    ticks: list[float] = []
    steps: list[tuple[float, float]] = []
    step = demo_engine.step

    def timed_step():  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return step()
        finally:
            steps.append((start, time.perf_counter()))

    monkeypatch.setattr(demo_engine, "step", timed_step)

    async def ticker(done: anyio.Event) -> None:
        while not done.is_set():
            await anyio.sleep(0.002)
            ticks.append(time.perf_counter())

    async def one(i: int) -> None:
        ids, text, reason = [], [], None
        request = Request(prompt=f"Request number {i} says", params=SamplingParams(max_new_tokens=16, seed=i))
        async for delta in engine.stream(request):
            ids.extend(delta.token_ids)
            text.append(delta.text)
            reason = delta.finish_reason
        results[i] = (ids, "".join(text), reason)

    async def main() -> None:
        done = anyio.Event()
        async with anyio.create_task_group() as outer:
            outer.start_soon(ticker, done)
            async with anyio.create_task_group() as tg:
                for i in range(100):
                    tg.start_soon(one, i)
            done.set()
        await engine.aclose()

    anyio.run(main)
    assert len(results) == 100
    assert all(reason in ("length", "stop") and ids for ids, _, reason in results.values())
    tok = demo_engine.tokenizer
    assert tok is not None
    assert all(text == tok.decode(ids) for ids, text, _ in results.values())
    # The engine steps on its own thread, so the event loop keeps running while a step computes: the ticker
    # ticks inside the engine's longer steps (a loop that ran the steps itself could not tick in any).
    # Structural rather than a latency bound, so a slow or noisy machine cannot fail it.
    long_steps = [(start, end) for start, end in steps if end - start > 0.03]
    assert long_steps, "no engine step long enough to observe"
    overlapped = [any(start < t < end for t in ticks) for start, end in long_steps]
    assert sum(overlapped) >= len(long_steps) / 2, f"the loop ticked in {sum(overlapped)} of {len(long_steps)} steps"
    assert_no_leaks(demo_engine)


def test_stream_matches_sync_generate(demo_engine: Engine) -> None:
    params = SamplingParams(max_new_tokens=12, seed=7)
    expected = demo_engine.generate(["Same seed, same text"], params)[0]
    engine = AsyncEngine(engine=demo_engine)

    async def main() -> None:
        out = await engine.generate(Request(prompt="Same seed, same text", params=params))
        assert out.token_ids == expected.token_ids and out.text == expected.text
        await engine.aclose()

    anyio.run(main)


def test_abort_and_cancellation_free_the_request(demo_engine: Engine) -> None:
    engine = AsyncEngine(engine=demo_engine)

    async def main() -> None:
        request = Request(prompt="abort me", params=SamplingParams(max_new_tokens=10_000, ignore_eos=True))
        reasons = []
        async for delta in engine.stream(request):
            if delta.completion_tokens == 3:
                await engine.abort(request.request_id)
            reasons.append(delta.finish_reason)
        assert reasons[-1] == "abort" and len(reasons) < 50

        # A consumer that is cancelled mid-stream aborts its request too.
        with anyio.move_on_after(0.5):
            async for _ in engine.stream(Request(prompt="cancel me",
                                                 params=SamplingParams(max_new_tokens=10_000, ignore_eos=True))):
                pass
        for _ in range(100):
            if engine.stats().running == 0 and engine.stats().waiting == 0:
                break
            await anyio.sleep(0.02)
        await engine.aclose()

    anyio.run(main)
    assert_no_leaks(demo_engine)


def test_errors_reach_the_caller_and_the_engine_keeps_serving(demo_engine: Engine) -> None:
    engine = AsyncEngine(engine=demo_engine)

    async def main() -> None:
        with pytest.raises(InvalidRequestError) as info:
            await engine.generate(Request(prompt="x", params={"temperature": 0}))  # type: ignore[arg-type]
        assert info.value.field == "params"
        with pytest.raises(InvalidRequestError) as info:
            await engine.generate(Request(prompt=""))
        assert info.value.field == "prompt"
        ok = await engine.generate(Request(prompt="still here", params=SamplingParams(max_new_tokens=3)))
        assert len(ok.token_ids) == 3
        await engine.aclose()
        with pytest.raises(EngineClosedError):
            await engine.generate(Request(prompt="after close"))

    anyio.run(main)


def test_sessions_and_stats_through_the_async_api(demo_engine: Engine) -> None:
    engine = AsyncEngine(engine=demo_engine)

    async def main() -> None:
        engine.open_session("agent-7", ttl=30)
        messages = [{"role": "user", "content": "Plan a trip"}]
        first = await engine.generate(Request(messages=messages, session_id="agent-7",
                                              params=SamplingParams(max_new_tokens=8, seed=1)))
        assert engine.stats().pinned_tokens > 0
        messages += [{"role": "assistant", "content": first.text},
                     {"role": "user", "content": "tool result: sunny"}]
        second = await engine.generate(Request(messages=messages, session_id="agent-7",
                                               params=SamplingParams(max_new_tokens=4, seed=1)))
        assert second.cached_tokens >= first.prompt_tokens  # the whole first prompt was reused
        engine.close_session("agent-7")
        await anyio.sleep(0.05)
        assert engine.stats().pinned_tokens == 0
        await engine.aclose()

    anyio.run(main)


def test_create_loads_off_the_event_loop(demo_path) -> None:  # type: ignore[no-untyped-def]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            engine = await AsyncEngine.create("demo", max_kv_tokens=1024)
            tg.cancel_scope.cancel()
        assert ticks > 0  # the loop kept running while the model loaded
        out = await engine.generate(Request(prompt="hi", params=SamplingParams(max_new_tokens=2)))
        assert len(out.token_ids) == 2
        await engine.aclose()

    anyio.run(main)


class ExplodingConstraint:
    """A constraint whose ``advance`` raises: a step fails on the engine thread, mid-batch."""

    def fill_bitmask(self, bitmask: object) -> None:
        pass  # every token allowed

    def advance(self, token_id: int) -> None:
        raise RuntimeError("constraint blew up")

    def is_terminated(self) -> bool:
        return False


def test_a_failing_step_ends_the_requests_in_flight_and_the_engine_goes_on(demo_engine: Engine) -> None:
    from engine import EngineError

    engine = AsyncEngine(engine=demo_engine)
    outcomes: dict[str, object] = {}

    async def one(name: str, request: Request) -> None:
        try:
            outcomes[name] = await engine.generate(request)
        except EngineError as exc:
            outcomes[name] = exc

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "bystander", Request(prompt="A long story begins",
                                                    params=SamplingParams(max_new_tokens=64, ignore_eos=True)))
            await anyio.sleep(0.05)
            tg.start_soon(one, "bad", Request(prompt="Boom", constraint=ExplodingConstraint(),
                                              params=SamplingParams(max_new_tokens=8)))
        after = await engine.generate(Request(prompt="Still alive?", params=SamplingParams(max_new_tokens=5,
                                                                                          ignore_eos=True)))
        outcomes["after"] = after
        await engine.aclose()

    anyio.run(main)
    bad = outcomes["bad"]
    assert isinstance(bad, EngineError) and "constraint blew up" in str(bad)
    # the bystander shared the failed step: it ends with the same error (or finished before it)
    assert isinstance(outcomes["bystander"], EngineError) or outcomes["bystander"].finish_reason == "length"  # type: ignore[union-attr]
    assert len(outcomes["after"].token_ids) == 5  # type: ignore[union-attr]
    assert_no_leaks(demo_engine)
