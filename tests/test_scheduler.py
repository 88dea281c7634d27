"""Scheduler: admission, chunked prefill, prefix reuse, reserve, retraction, abort, sessions.

The scheduler is driven the way the engine drives it: ``schedule()``, then one token appended to
every chunk that samples, then ``finish`` for each sequence that reached ``max_new_tokens``.

``Harness.step`` also plays the model's part in the KV pool: every chunk "writes" into its slots the
token prefix whose K/V they hold, and before that checks that the slots of the positions the chunk
attends to (cached prefix and earlier chunks) hold exactly this sequence's prefix. A slot handed to
two owners, a wrong cached prefix or a lost position shows up there. After every step ``check``
recomputes the cache counters, the lock counts and the partition of the pool.
"""

from __future__ import annotations

import random

import pytest

from engine.kv_cache import SlotAllocator
from engine.radix_cache import RadixCache, TreeNode
from engine.sampling import SamplingParams
from engine.scheduler import Scheduler, SchedulerConfig, Step
from engine.sequence import Sequence, Status


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def out_token(seq: Sequence) -> int:
    """The token the "model" samples: a function of the request and the output index only."""
    return 500 + (sum(map(ord, seq.request_id)) * 7 + seq.num_output) % 50


def expected_output(seq: Sequence, n: int) -> list[int]:
    return [500 + (sum(map(ord, seq.request_id)) * 7 + k) % 50 for k in range(n)]


class Harness:
    def __init__(self, pool: int, *, prefix_cache: bool = True, max_pinned: int | None = None,
                 chunk_size: int = 64, max_running: int = 64, reserve_ratio: float = 0.0,
                 session_ttl: float = 60.0, max_context: int | None = None) -> None:
        self.clock = FakeClock()
        self.alloc = SlotAllocator(pool)
        self.cache = (RadixCache(self.alloc, max_pinned_tokens=pool if max_pinned is None else max_pinned,
                                 clock=self.clock) if prefix_cache else None)
        self.config = SchedulerConfig(chunk_size=chunk_size, max_running=max_running,
                                      reserve_ratio=reserve_ratio, session_ttl=session_ttl)
        self.sched = Scheduler(self.config, self.alloc, self.cache, max_context)
        self.max_context = max_context
        self.kv: dict[int, tuple[int, ...]] = {}  # slot -> token prefix whose K/V it holds
        self.finished: list[Sequence] = []  # by finish(), in order
        self.ended: list[Sequence] = []  # by the scheduler (step.finished)
        self.steps = 0

    def add(self, rid: str, prompt: list[int], max_new: int, session: str | None = None) -> Sequence:
        seq = Sequence(rid, list(prompt), SamplingParams(max_new_tokens=max_new), session_id=session)
        self.sched.add(seq)
        return seq

    def step(self) -> Step:
        sched = self.sched
        before = {id(s): s.num_computed for s in sched.running}
        decoding = {id(s) for s in sched.running if not s.in_prefill}
        step = sched.schedule()
        self.steps += 1
        retracted = {id(s) for s in step.retracted}
        seen: set[int] = set()
        prefill_tokens = 0
        for c in step.chunks:
            seq = c.seq
            assert id(seq) not in seen, "a sequence got two chunks in one step"
            seen.add(id(seq))
            assert seq.status is Status.RUNNING and seq in sched.running
            if id(seq) in decoding and id(seq) not in retracted:
                assert c.length == 1 and c.sample, "a decode is one sampled token"
            else:
                prefill_tokens += c.length
            if id(seq) in before and id(seq) not in retracted:
                assert c.start == before[id(seq)]
            else:  # admitted this step: starts after the cached prefix
                assert c.start == seq.num_tree == seq.cached_tokens or seq.num_retractions > 0
                assert c.start == seq.num_tree
            assert c.length >= 1
            assert c.start + c.length == seq.num_computed <= len(seq.token_ids)
            assert len(seq.slots) == seq.num_computed
            assert c.sample == (seq.num_computed == len(seq.token_ids))
            for p in range(c.start):  # what this chunk attends to
                assert self.kv.get(seq.slots[p]) == tuple(seq.token_ids[: p + 1]), f"bad K/V at {p}"
            for p in range(c.start, c.start + c.length):
                self.kv[seq.slots[p]] = tuple(seq.token_ids[: p + 1])
        assert prefill_tokens <= self.config.chunk_size
        for seq in step.finished:
            assert seq.finish_reason == "length" and seq.status is Status.FINISHED
            assert seq not in sched.running and seq not in sched.waiting
            self.ended.append(seq)
        chunked = {id(c.seq) for c in step.chunks}
        for seq in step.retracted:
            assert seq.num_retractions >= 1
            if seq in step.finished:  # ended right away: it can never fit
                continue
            if id(seq) in chunked:  # re-admitted in the same step (checked above as an admission)
                assert seq.status is Status.RUNNING
                continue
            assert seq.status is Status.WAITING and seq in sched.waiting and seq not in sched.running
            assert seq.slots == [] and seq.num_computed == 0 and seq.prefix_node is None
        self.check()
        for c in step.chunks:
            if c.sample:
                seq = c.seq
                seq.token_ids.append(out_token(seq))
                if seq.num_output >= seq.params.max_new_tokens or len(seq.token_ids) >= (self.max_context or 1 << 62):
                    sched.finish(seq)
                    assert seq.status is Status.FINISHED
                    self.finished.append(seq)
        self.check()
        return step

    def run(self, max_steps: int = 1000) -> None:
        while self.sched.has_work():
            self.step()
            assert self.steps < max_steps, "no progress"

    def check(self) -> None:
        check_scheduler(self.sched)

    def assert_idle(self) -> None:
        sched, alloc, cache = self.sched, self.alloc, self.cache
        assert not sched.running and not sched.waiting and not sched.has_work()
        if cache is not None:
            assert all(n.lock_ref == 0 for n in cache.nodes())
            assert cache.evictable_size == cache.total_size - cache.pinned_size
            assert alloc.num_free + cache.total_size == alloc.num_slots
        else:
            assert alloc.num_free == alloc.num_slots
        self.check()


def node_paths(cache: RadixCache) -> list[tuple[TreeNode, tuple[int, ...], list[int]]]:
    """Every node with the tokens and slots of its whole path from the root. Read-only walk."""
    out = []
    stack: list[tuple[TreeNode, tuple[int, ...], list[int]]] = [(cache.root, (), [])]
    while stack:
        node, toks, slots = stack.pop()
        for child in node.children.values():
            item = (child, (*toks, *child.key), slots + child.value)
            out.append(item)
            stack.append(item)
    return out


def check_scheduler(sched: Scheduler) -> None:
    alloc, cache = sched.allocator, sched.cache
    assert len(sched.running) <= sched.config.max_running
    assert all(s.status is Status.RUNNING for s in sched.running)
    assert all(s.status is Status.WAITING for s in sched.waiting)
    assert not set(map(id, sched.running)) & set(map(id, sched.waiting))
    owned: list[int] = []
    for s in sched.running:
        assert len(s.slots) == s.num_computed <= len(s.token_ids)
        assert 0 <= s.num_tree <= s.num_computed
        owned += s.slots[s.num_tree:]
    for s in sched.waiting:
        assert s.slots == [] and s.num_computed == 0
    tree: list[int] = []
    if cache is not None:
        paths = node_paths(cache)
        nodes = cache.nodes()
        assert len(paths) == len(nodes)
        tree = [x for n in nodes for x in n.value]
        assert cache.total_size == len(tree)
        assert cache.evictable_size == sum(len(n.key) for n in nodes if n.lock_ref == 0 and n.pin_ref == 0)
        assert cache.pinned_size == sum(len(n.key) for n in nodes if n.pin_ref > 0)
        by_tokens = {toks: slots for _, toks, slots in paths}
        for node, toks, _ in paths:
            # each node is locked exactly by the running sequences whose cached prefix covers it
            holders = sum(1 for s in sched.running if tuple(s.token_ids[: s.num_tree])[: len(toks)] == toks
                          and s.num_tree >= len(toks))
            assert node.lock_ref == holders, (toks, node.lock_ref, holders)
            assert node.pin_ref >= 0
        for s in sched.running:
            if s.num_tree:  # the prefix a running sequence reads is still the tree's
                assert by_tokens[tuple(s.token_ids[: s.num_tree])] == s.slots[: s.num_tree]
    else:
        assert all(s.num_tree == 0 for s in sched.running)
    # every slot of the pool exactly once: free, in the tree, or owned by a running sequence
    assert alloc.num_free + len(tree) + len(owned) == alloc.num_slots
    free = alloc.alloc(alloc.num_free)
    alloc.free(free)
    assert sorted(free + tree + owned) == list(range(alloc.num_slots))


def prompt(start: int, n: int) -> list[int]:
    return list(range(start, start + n))


@pytest.mark.parametrize("bad", [dict(chunk_size=0), dict(max_running=0), dict(reserve_ratio=-0.1),
                                 dict(reserve_ratio=1.5), dict(session_ttl=0)])
def test_config_rejects_invalid_values(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SchedulerConfig(**bad)  # type: ignore[arg-type]


# ---- admission and chunked prefill -----------------------------------------------------------


def test_admission_is_fifo() -> None:
    h = Harness(200, max_running=2)
    seqs = [h.add(f"r{i}", prompt(10 * i, 3), max_new=2 + i) for i in range(4)]
    step = h.step()
    assert [c.seq for c in step.chunks] == seqs[:2]
    assert list(h.sched.waiting) == seqs[2:]
    h.run()
    # r2 got the first free place, then r3
    assert h.finished == [seqs[0], seqs[1], seqs[2], seqs[3]]
    for s in seqs:
        assert s.output_ids == expected_output(s, s.params.max_new_tokens)
    h.assert_idle()


def test_all_admitted_in_arrival_order_when_they_fit() -> None:
    h = Harness(200)
    seqs = [h.add(f"r{i}", prompt(10 * i, 2 + i), max_new=1) for i in range(5)]
    step = h.step()
    assert [c.seq for c in step.chunks] == seqs
    assert all(c.sample and c.start == 0 and c.length == len(s.prompt_ids)
               for c, s in zip(step.chunks, seqs, strict=True))
    assert h.finished == seqs
    h.assert_idle()


def test_head_of_queue_that_does_not_fit_is_not_overtaken() -> None:
    h = Harness(20)
    a = h.add("a", prompt(0, 10), max_new=5)
    h.step()
    big = h.add("big", prompt(100, 15), max_new=1)  # 15 > 10 left
    small = h.add("small", prompt(200, 2), max_new=1)  # would fit, but arrived later
    step = h.step()
    assert [c.seq for c in step.chunks] == [a]
    assert list(h.sched.waiting) == [big, small]
    h.run()
    assert h.finished.index(big) < h.finished.index(small)
    h.assert_idle()


def test_max_running_caps_admission() -> None:
    h = Harness(200, max_running=3)
    seqs = [h.add(f"r{i}", prompt(10 * i, 2), max_new=4) for i in range(5)]
    h.step()
    assert h.sched.running == seqs[:3]
    h.run()
    assert all(s.num_output == 4 for s in seqs)
    h.assert_idle()


def test_long_prompt_is_prefilled_in_chunks_beside_decodes() -> None:
    h = Harness(200, chunk_size=4)
    a = h.add("a", prompt(0, 3), max_new=8)
    step = h.step()
    assert [(c.seq, c.start, c.length, c.sample) for c in step.chunks] == [(a, 0, 3, True)]
    b = h.add("b", prompt(100, 10), max_new=2)

    step = h.step()  # a decodes, b's first chunk rides in the same step
    assert [(c.seq, c.start, c.length, c.sample) for c in step.chunks] == [(a, 3, 1, True), (b, 0, 4, False)]
    assert b.num_output == 0
    step = h.step()
    assert [(c.seq, c.start, c.length, c.sample) for c in step.chunks] == [(a, 4, 1, True), (b, 4, 4, False)]
    assert b.num_output == 0
    step = h.step()  # b's last chunk samples
    assert [(c.seq, c.start, c.length, c.sample) for c in step.chunks] == [(a, 5, 1, True), (b, 8, 2, True)]
    assert b.num_output == 1 and b.num_chunks == 3
    assert h.sched.stats.chunked_prefills == 1  # b only: a's prompt fit one chunk
    h.run()
    assert a.output_ids == expected_output(a, 8) and b.output_ids == expected_output(b, 2)
    assert h.sched.stats.chunked_prefills == 1
    h.assert_idle()


def test_chunk_budget_is_shared_by_prefills_oldest_first() -> None:
    h = Harness(200, chunk_size=5)
    a = h.add("a", prompt(0, 7), max_new=1)
    b = h.add("b", prompt(100, 7), max_new=1)
    steps = []
    while h.sched.has_work():
        steps.append([(c.seq.request_id, c.start, c.length) for c in h.step().chunks])
    assert steps[0] == [("a", 0, 5)]  # a takes the whole budget; b not admitted (no budget left)
    assert steps[1] == [("a", 5, 2), ("b", 0, 3)]
    assert steps[2] == [("b", 3, 4)]
    assert a.num_chunks == 2 and b.num_chunks == 2
    assert h.sched.stats.chunked_prefills == 2
    h.assert_idle()


def test_prompt_that_fits_one_chunk_is_not_counted_as_chunked() -> None:
    h = Harness(200, chunk_size=8)
    s = h.add("a", prompt(0, 8), max_new=3)
    h.run()
    assert s.num_chunks == 1
    assert h.sched.stats.chunked_prefills == 0
    h.assert_idle()


# ---- prefix reuse ------------------------------------------------------------------------------


def test_second_request_reuses_the_shared_prefix() -> None:
    h = Harness(200)
    first = h.add("first", [1, 2, 3, 4, 5, 6, 7, 8], max_new=2)
    h.run()
    second = h.add("second", [1, 2, 3, 4, 5, 90, 91], max_new=2)
    step = h.step()
    assert second.cached_tokens == 5
    assert [(c.start, c.length) for c in step.chunks] == [(5, 2)]
    h.run()
    assert first.cached_tokens == 0
    assert h.sched.stats.cached_hit_tokens == 5
    assert h.sched.stats.prompt_tokens == 15
    h.assert_idle()


def test_identical_prompt_still_computes_one_token() -> None:
    h = Harness(200)
    first = h.add("first", [1, 2, 3, 4, 5, 6], max_new=3)
    h.run()
    # the cache holds prompt + first two outputs (the last sampled token was never computed)
    assert len(first.token_ids) == 9
    same = h.add("same", [1, 2, 3, 4, 5, 6], max_new=2)
    step = h.step()
    assert same.cached_tokens == 5
    assert [(c.start, c.length, c.sample) for c in step.chunks] == [(5, 1, True)]
    whole = h.add("whole", first.token_ids[:8], max_new=1)  # exactly what the cache holds
    step = h.step()
    assert whole.cached_tokens == 7
    assert [(c.seq, c.start, c.length, c.sample) for c in step.chunks if c.seq is whole] == [(whole, 7, 1, True)]
    h.run()
    h.assert_idle()


def test_concurrent_requests_with_a_common_prefix_do_not_duplicate_it() -> None:
    h = Harness(200)
    base = prompt(0, 10)
    seqs = [h.add(f"r{i}", [*base, 100 + i], max_new=3) for i in range(3)]
    h.run()  # all admitted together: nothing cached yet, each computes the prefix
    assert all(s.cached_tokens == 0 for s in seqs)
    # the tree holds the prefix once plus each request's own tail (prompt tail + 2 computed outputs)
    assert h.cache is not None and h.cache.total_size == 10 + 3 * 3
    later = h.add("later", [*base, 200], max_new=1)
    h.run()
    assert later.cached_tokens == 10
    h.assert_idle()


def test_evicted_prefix_is_recomputed() -> None:
    h = Harness(16)
    h.add("a", prompt(0, 8), max_new=1)
    h.run()
    h.add("b", prompt(100, 14), max_new=1)  # needs a's cached slots: a gets evicted
    h.run()
    c = h.add("c", prompt(0, 8), max_new=1)
    h.run()
    assert c.cached_tokens == 0
    h.assert_idle()


# ---- reserve -----------------------------------------------------------------------------------


def test_reserve_holds_back_a_request_when_running_futures_do_not_fit() -> None:
    for ratio, admitted in ((1.0, False), (0.0, True)):
        h = Harness(20, reserve_ratio=ratio)
        a = h.add("a", prompt(0, 4), max_new=14)  # will need up to 13 more slots
        b = h.add("b", prompt(100, 4), max_new=1)  # 4 slots now, 1 in reserve
        step = h.step()
        assert (b in [c.seq for c in step.chunks]) is admitted
        assert (b in h.sched.waiting) is not admitted
        h.run()
        assert a.output_ids == expected_output(a, 14) and b.output_ids == expected_output(b, 1)
        h.assert_idle()


def test_reserve_of_the_new_request_counts_too() -> None:
    for ratio, admitted in ((1.0, False), (0.0, True)):
        h = Harness(20, reserve_ratio=ratio)
        h.add("a", prompt(0, 4), max_new=2)  # 4 used, 2 reserved: 14 left
        b = h.add("b", prompt(100, 4), max_new=11)  # 4 now + 11 reserve > 14
        step = h.step()
        assert ("b" in [c.seq.request_id for c in step.chunks]) is admitted
        assert (list(h.sched.waiting) == [b]) is not admitted
        h.run()
        assert b.output_ids == expected_output(b, 11)
        h.assert_idle()


def test_reserve_is_waived_when_nothing_runs() -> None:
    h = Harness(20, reserve_ratio=1.0)
    s = h.add("a", prompt(0, 4), max_new=12)
    t = h.add("b", prompt(100, 4), max_new=100)  # its reserve can never fit beside anything
    step = h.step()
    assert [c.seq for c in step.chunks] == [s]
    assert list(h.sched.waiting) == [t]
    h.run()
    assert s.output_ids == expected_output(s, 12)
    # admitted once alone, despite a reserve far beyond the pool; it then runs until the pool is full
    assert t.num_output > 0 and t.finish_reason == "length" and len(t.token_ids) == 21
    h.assert_idle()


def test_lone_request_is_admitted_even_if_its_reserve_cannot_fit() -> None:
    h = Harness(20, reserve_ratio=1.0)
    s = h.add("a", prompt(0, 6), max_new=50)
    step = h.step()
    assert [c.seq for c in step.chunks] == [s]
    h.run()
    assert s.finish_reason == "length" and s in h.ended
    h.assert_idle()


def test_reserve_stops_at_the_context_so_a_huge_max_new_tokens_blocks_nobody() -> None:
    # max_tokens=10**9 through the API: the request can only grow to the context, and so can its reserve
    for context, admitted in ((12, True), (None, False)):
        h = Harness(40, reserve_ratio=1.0, max_context=context)
        a = h.add("a", prompt(0, 4), max_new=10**9)
        b = h.add("b", prompt(100, 4), max_new=2)
        step = h.step()
        assert ("b" in [c.seq.request_id for c in step.chunks]) is admitted
        if context is None:
            continue
        h.run()
        assert b.output_ids == expected_output(b, 2)
        assert len(a.token_ids) == context and a.output_ids == expected_output(a, context - 4)
        h.assert_idle()


# ---- retraction --------------------------------------------------------------------------------


def test_newest_running_is_retracted_and_resumes_without_losing_tokens() -> None:
    h = Harness(16, max_running=2)
    a = h.add("a", prompt(0, 4), max_new=8)  # each needs up to 4 + 7 = 11 slots: 22 > 16
    b = h.add("b", prompt(100, 4), max_new=8)
    c = h.add("c", prompt(200, 3), max_new=2)  # waits behind them (max_running)
    retraction_step = None
    first_chunk_after: dict[str, tuple[int, int]] = {}  # (step, position) of the first chunk after it
    while h.sched.has_work():
        outputs_before = b.output_ids
        step = h.step()
        if retraction_step is not None:
            for i, ch in enumerate(step.chunks):
                first_chunk_after.setdefault(ch.seq.request_id, (h.steps, i))
        if step.retracted:
            assert retraction_step is None
            retraction_step = h.steps
            assert step.retracted == [b]  # the newest
            assert h.sched.stats.retractions == 1
            assert h.sched.waiting[0] is b and list(h.sched.waiting) == [b, c]  # front of the queue
            assert b.token_ids == b.prompt_ids + outputs_before  # prompt + output so far, intact
            assert 0 < len(outputs_before) < 8
            assert b.num_retractions == 1 and b not in [ch.seq for ch in step.chunks]
            assert [ch.seq for ch in step.chunks] == [a]
        assert h.steps < 200
    assert retraction_step is not None
    assert h.sched.stats.retractions == 1
    for s in (a, b, c):
        assert s.status is Status.FINISHED and s.finish_reason is None
        assert s.output_ids == expected_output(s, s.params.max_new_tokens)
    assert first_chunk_after["b"] < first_chunk_after["c"]  # b resumed before c was admitted
    # re-admission is not a new request: prompt statistics count b once
    assert h.sched.stats.prompt_tokens == 4 + 4 + 3
    assert b.cached_tokens == 0 and h.sched.stats.cached_hit_tokens == 0
    h.assert_idle()


def test_retracted_sequence_reuses_what_the_cache_kept() -> None:
    # a's prompt is shared with b: when b is retracted its computed K/V goes to the cache, and its
    # shared prefix stays locked by a, so re-admission only recomputes b's own part.
    h = Harness(20, max_running=2)
    base = prompt(0, 8)
    h.add("seed", base, max_new=1)
    h.run()
    a = h.add("a", [*base, 50], max_new=8)
    b = h.add("b", [*base, 60], max_new=8)
    resumed_chunks = []
    while h.sched.has_work():
        step = h.step()
        if b.num_retractions and not step.retracted:
            resumed_chunks += [(c.start, c.length) for c in step.chunks if c.seq is b and c.length > 1]
        assert h.steps < 200
    assert h.sched.stats.retractions >= 1
    assert resumed_chunks and resumed_chunks[0][0] >= 8  # the shared prompt was not recomputed
    # cached_tokens and the hit statistics describe the first admission only
    assert a.cached_tokens == b.cached_tokens == 8
    assert h.sched.stats.cached_hit_tokens == 16 and h.sched.stats.prompt_tokens == 8 + 9 + 9
    assert a.output_ids == expected_output(a, 8) and b.output_ids == expected_output(b, 8)
    h.assert_idle()


def test_retraction_during_prefill_of_the_newest() -> None:
    h = Harness(14, chunk_size=3)
    a = h.add("a", prompt(0, 3), max_new=10)  # will grow to 12 slots
    h.step()
    b = h.add("b", prompt(100, 9), max_new=2)
    saw_retraction = False
    while h.sched.has_work():
        step = h.step()
        if step.retracted:
            saw_retraction = True
            assert step.retracted == [b]
        assert h.steps < 200
    assert saw_retraction
    assert a.output_ids == expected_output(a, 10) and b.output_ids == expected_output(b, 2)
    h.assert_idle()


# ---- abort -------------------------------------------------------------------------------------


def test_abort_while_waiting() -> None:
    h = Harness(100, max_running=1)
    a = h.add("a", prompt(0, 4), max_new=3)
    b = h.add("b", prompt(100, 4), max_new=3)
    h.step()
    assert list(h.sched.waiting) == [b]
    h.sched.abort(b)
    assert b.status is Status.FINISHED and b not in h.sched.waiting and b not in h.sched.running
    h.check()
    h.run()
    assert a.num_output == 3 and b.num_output == 0
    h.assert_idle()


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_abort_mid_prefill(prefix_cache: bool) -> None:
    h = Harness(100, chunk_size=4, prefix_cache=prefix_cache)
    other = h.add("other", prompt(0, 3), max_new=6)
    s = h.add("s", prompt(100, 11), max_new=3)
    h.step()
    h.step()
    assert s.status is Status.RUNNING and 0 < s.num_computed < 11 and s.num_output == 0
    h.sched.abort(s)
    assert s.status is Status.FINISHED and s not in h.sched.running and s not in h.sched.waiting
    assert s.slots == []
    h.check()
    h.run()
    assert all(c is not s for c in h.finished)
    assert other.output_ids == expected_output(other, 6)
    h.assert_idle()


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_abort_during_decode(prefix_cache: bool) -> None:
    h = Harness(100, prefix_cache=prefix_cache)
    other = h.add("other", prompt(0, 3), max_new=8)
    s = h.add("s", prompt(100, 5), max_new=10)
    for _ in range(4):
        h.step()
    assert s.num_output == 4
    h.sched.abort(s)
    assert s.status is Status.FINISHED and s not in h.sched.running and s not in h.sched.waiting
    h.check()
    h.run()
    assert s.num_output == 4
    assert other.output_ids == expected_output(other, 8)
    h.assert_idle()


def test_abort_of_a_prefix_sharer_keeps_the_other_intact() -> None:
    h = Harness(100)
    base = prompt(0, 6)
    h.add("seed", base, max_new=1)
    h.run()
    a = h.add("a", [*base, 10], max_new=5)
    b = h.add("b", [*base, 20], max_new=5)
    h.step()
    h.step()
    assert a.num_tree == b.num_tree == 6
    h.sched.abort(a)
    h.check()
    h.run()
    assert b.output_ids == expected_output(b, 5)
    h.assert_idle()


def test_abort_after_retraction() -> None:
    h = Harness(16, max_running=2)
    h.add("a", prompt(0, 4), max_new=8)
    b = h.add("b", prompt(100, 4), max_new=8)
    while not b.num_retractions:
        h.step()
        assert h.steps < 100
    assert b in h.sched.waiting
    h.sched.abort(b)
    assert b not in h.sched.waiting and b.status is Status.FINISHED
    h.run()
    h.assert_idle()


# ---- sessions ----------------------------------------------------------------------------------


def test_finished_session_request_stays_pinned_until_the_next_one_runs() -> None:
    h = Harness(100)
    cache = h.cache
    assert cache is not None
    h.sched.open_session("s", ttl=30)
    first = h.add("t1", prompt(0, 6), max_new=3, session="s")
    h.run()
    assert cache.is_pinned("s")
    computed = len(first.token_ids) - 1
    assert cache.pinned_size == computed
    assert cache.evict(10**9) == 0  # the session's history survives any eviction
    assert cache.total_size == computed

    second = h.add("t2", [*first.token_ids, 70, 71], max_new=2, session="s")
    step = h.step()
    assert [c.seq for c in step.chunks] == [second]
    assert second.cached_tokens == computed
    assert not cache.is_pinned("s") and cache.pinned_size == 0  # its lock took over
    assert cache.evictable_size == 0 and cache.evict(10**9) == 0
    h.run()
    assert cache.is_pinned("s")
    assert cache.pinned_size == len(second.token_ids) - 1

    h.sched.close_session("s")
    assert not cache.is_pinned("s")
    assert cache.pinned_size == 0 and cache.evictable_size == cache.total_size
    h.assert_idle()


def test_session_pin_expires_after_its_ttl() -> None:
    h = Harness(100, session_ttl=60)
    cache = h.cache
    assert cache is not None
    h.sched.open_session("short", ttl=5)
    h.add("a", prompt(0, 4), max_new=2, session="short")
    h.add("b", prompt(100, 4), max_new=2, session="default")  # never opened: config's ttl
    h.run()
    assert cache.is_pinned("short") and cache.is_pinned("default")
    h.clock.now += 10
    h.step()  # schedule() expires pins even with nothing to run
    assert not cache.is_pinned("short") and cache.is_pinned("default")
    h.clock.now += 100
    h.step()
    assert not cache.is_pinned("default")
    assert cache.pinned_size == 0 and cache.evictable_size == cache.total_size
    h.assert_idle()


def test_aborted_session_request_does_not_pin() -> None:
    h = Harness(100)
    cache = h.cache
    assert cache is not None
    s = h.add("a", prompt(0, 4), max_new=5, session="s")
    h.step()
    h.step()
    h.sched.abort(s)
    assert not cache.is_pinned("s") and cache.pinned_size == 0
    h.assert_idle()


def test_close_session_while_its_request_runs_does_not_pin_it_again() -> None:
    h = Harness(100)
    cache = h.cache
    assert cache is not None
    h.add("a", prompt(0, 4), max_new=5, session="s")
    h.step()
    h.sched.close_session("s")  # closed mid-request: its K/V goes to the cache, unpinned, when it ends
    h.add("b", prompt(50, 4), max_new=3, session="s2")  # another session's request pins as usual
    h.run()
    assert not cache.is_pinned("s") and cache.is_pinned("s2")
    h.sched.close_session("s2")
    assert cache.pinned_size == 0 and cache.evictable_size == cache.total_size
    h.assert_idle()


def test_close_session_with_nothing_pinned_is_harmless() -> None:
    h = Harness(50)
    h.sched.close_session("nope")
    h.sched.open_session("s", ttl=None)
    h.sched.close_session("s")
    h.add("a", prompt(0, 3), max_new=2)
    h.run()
    h.assert_idle()


# ---- without the prefix cache -------------------------------------------------------------------


def test_without_prefix_cache_every_slot_comes_back() -> None:
    h = Harness(24, prefix_cache=False, chunk_size=4, max_running=3)
    seqs = [h.add(f"r{i}", [1, 2, 3, 4, 5, 6 + i], max_new=5, session="s") for i in range(5)]
    h.run()
    for s in seqs:
        assert s.cached_tokens == 0
        assert s.output_ids == expected_output(s, 5)
    assert h.sched.stats.cached_hit_tokens == 0
    h.sched.close_session("s")
    h.assert_idle()


def test_without_prefix_cache_retraction_still_works() -> None:
    h = Harness(16, prefix_cache=False, max_running=2)
    a = h.add("a", prompt(0, 4), max_new=8)
    b = h.add("b", prompt(100, 4), max_new=8)
    h.run()
    assert h.sched.stats.retractions >= 1
    assert a.output_ids == expected_output(a, 8) and b.output_ids == expected_output(b, 8)
    h.assert_idle()


# ---- deadlock breakers --------------------------------------------------------------------------


def test_lone_sequence_outgrowing_the_pool_finishes_with_length() -> None:
    pool = 8
    h = Harness(pool)
    s = h.add("a", prompt(0, 5), max_new=100)
    h.run()
    assert s in h.ended and s not in h.finished
    assert s.status is Status.FINISHED and s.finish_reason == "length"
    # it ran until the pool held K/V for all of its tokens but the last sampled one
    assert len(s.token_ids) == pool + 1
    assert s.output_ids == expected_output(s, pool + 1 - 5)
    h.assert_idle()


def test_prompt_larger_than_the_pool_is_ended_and_the_queue_moves_on() -> None:
    h = Harness(8)
    too_big = h.add("big", prompt(0, 12), max_new=2)
    ok = h.add("ok", prompt(100, 3), max_new=2)
    step = h.step()
    assert step.finished == [too_big] and too_big.finish_reason == "length" and too_big.num_output == 0
    h.run()
    assert ok.output_ids == expected_output(ok, 2)
    h.assert_idle()


def test_request_blocked_by_pinned_sessions_gets_in_after_the_oldest_pin_goes() -> None:
    h = Harness(10, max_pinned=10)
    cache = h.cache
    assert cache is not None
    h.add("a", prompt(0, 3), max_new=2, session="old")
    h.run()
    h.add("b", prompt(100, 3), max_new=2, session="new")
    h.run()
    assert cache.is_pinned("old") and cache.is_pinned("new")
    assert cache.pinned_size == 8 and h.alloc.num_free == 2

    s = h.add("c", prompt(200, 5), max_new=2)
    for _ in range(3):
        h.step()
        if s.status is not Status.WAITING:
            break
    assert s.status is not Status.WAITING, "never admitted"
    assert not cache.is_pinned("old")  # the oldest pin was released early
    assert cache.is_pinned("new")  # and only as much as needed
    h.run()
    assert s.output_ids == expected_output(s, 2)
    h.assert_idle()


def test_running_prefill_starved_by_a_pinned_session_makes_progress() -> None:
    # b is admitted while a decodes; a's growth eats b's room, then a finishes and its session
    # pins all it used. b can get no chunk: it is retracted, then the pin is released for it.
    h = Harness(12, chunk_size=2, max_pinned=12)
    cache = h.cache
    assert cache is not None
    a = h.add("a", prompt(0, 2), max_new=5, session="x")
    h.step()
    b = h.add("b", prompt(100, 8), max_new=2)
    starved = False
    while h.sched.has_work():
        step = h.step()
        if step.retracted:
            assert step.retracted == [b] and step.chunks == []
            assert cache.is_pinned("x")
            starved = True
        assert h.steps < 50
    assert starved
    assert not cache.is_pinned("x")  # released early for b
    assert a.output_ids == expected_output(a, 5) and b.output_ids == expected_output(b, 2)
    assert h.sched.stats.retractions == 1
    h.assert_idle()


# ---- randomized --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(10))
def test_random_workload_keeps_invariants(seed: int) -> None:
    rng = random.Random(seed)
    pool = rng.choice([24, 40, 64])
    h = Harness(pool, chunk_size=rng.choice([1, 3, 8, 64]), max_running=rng.choice([1, 3, 16]),
                reserve_ratio=rng.choice([0.0, 0.3, 1.0]), max_pinned=rng.choice([0, 8, pool]),
                prefix_cache=seed % 5 != 4, session_ttl=rng.choice([1.0, 20.0]))
    seqs: list[Sequence] = []
    aborted: set[int] = set()
    histories: dict[str, list[int]] = {}
    for i in range(40):
        if rng.random() < 0.6:
            sid = rng.choice([None, "s0", "s1", "s2"])
            if sid is not None and sid in histories and rng.random() < 0.7:
                p = histories[sid] + [rng.randrange(4) for _ in range(rng.randint(1, 4))]
            else:
                p = [rng.randrange(4) for _ in range(rng.randint(1, 12))]
            p = p[-(pool - 2):]
            seqs.append(h.add(f"r{i}", p, max_new=rng.randint(1, 8), session=sid))
        if rng.random() < 0.08:
            live = [s for s in seqs if s.status is not Status.FINISHED]
            if live:
                victim = rng.choice(live)
                h.sched.abort(victim)
                aborted.add(id(victim))
                h.check()
        if rng.random() < 0.05:
            h.sched.close_session(rng.choice(["s0", "s1", "s2"]))
        h.clock.now += rng.choice([0.0, 0.5, 3.0])
        h.step()
        for s in h.finished:
            if s.session_id is not None:
                histories[s.session_id] = list(s.token_ids)
    h.run(max_steps=2000)
    for s in seqs:
        assert s.status is Status.FINISHED
        if id(s) in aborted:
            continue
        if s.finish_reason == "length":
            assert s in h.ended and len(s.token_ids) >= pool
        else:
            assert s.output_ids == expected_output(s, s.params.max_new_tokens)
    for sid in ("s0", "s1", "s2"):
        h.sched.close_session(sid)
    h.assert_idle()
    if h.cache is not None:
        assert h.cache.pinned_size == 0 and h.cache.evictable_size == h.cache.total_size
