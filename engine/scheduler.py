"""Which tokens run in the next step, and where their K/V goes. Pure Python; no torch.

A step is a list of *chunks*: a run of a sequence's tokens whose K/V is computed this step. A
decode is a chunk of one token; a prefill is a chunk of up to ``chunk_size`` prompt tokens. When a
chunk reaches the end of the sequence's tokens the step samples its next token. A sequence whose
grammar forced tokens after its last sampled one (fast-forward) has several uncomputed tokens: it
takes the prefill path, so they run as one chunk (within the chunk budget) that samples at its end.
``schedule()`` builds one step in three phases:

1. **Decode** every running sequence past its prefill (one slot each). If the pool cannot hold
   them even after evicting cached prefixes, *retract* the newest running sequences: their
   computed K/V goes into the radix cache (evictable), they return to the front of the queue with
   their output so far, and later re-admission recomputes only what the cache lost.
2. **Continue prefills** of admitted sequences, oldest first, within the chunk budget (forced
   tokens included).
3. **Admit** waiting sequences in arrival order while budget, ``max_running`` and memory allow.
   Admission matches the longest cached prefix, locks it, and requires that every admitted
   sequence's remaining tokens plus a reserve for its future output (``reserve_ratio`` of its
   remaining ``max_new_tokens``) fit in free + evictable slots.

Before the phases, the prompt K/V that the previous step's prefill chunks computed enters the
radix cache (locked by its sequence while it runs), so a request admitted later shares a prefix
that a running request computed, instead of waiting for it to finish. And admission stops at a
request whose prompt starts with a longer prefix than the cache holds that a request prefilling
this step is computing: it is admitted next step and shares it. 64 sessions sent at once with one
system prompt compute that prompt once, not 64 times.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from engine.radix_cache import RadixCache
from engine.sequence import Sequence, Status

log = logging.getLogger(__name__)


class Allocator(Protocol):
    num_slots: int

    @property
    def num_free(self) -> int: ...
    def alloc(self, n: int) -> list[int]: ...
    def free(self, slots: list[int]) -> None: ...


@dataclass
class SchedulerConfig:
    chunk_size: int = 512
    """Most prompt tokens prefilled in one step (decodes ride along on top)."""
    max_running: int = 256
    """Most sequences admitted at once."""
    reserve_ratio: float = 0.5
    """Share of each running request's remaining max_new_tokens kept free at admission."""
    session_ttl: float = 60.0
    """Seconds a finished session's KV stays pinned waiting for its next request."""

    def __post_init__(self) -> None:
        for name in ("chunk_size", "max_running"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not _real(self.reserve_ratio) or not 0 <= self.reserve_ratio <= 1:
            raise ValueError(f"reserve_ratio must be in [0, 1], got {self.reserve_ratio!r}")
        if not _real(self.session_ttl) or not self.session_ttl > 0:
            raise ValueError(f"session_ttl must be > 0 seconds, got {self.session_ttl!r}")


def _real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Chunk:
    seq: Sequence
    start: int
    """Position of the first token computed in this chunk."""
    length: int
    sample: bool
    """The chunk reaches the end of the sequence: sample its next token after the forward."""


@dataclass
class Step:
    chunks: list[Chunk] = field(default_factory=list)
    retracted: list[Sequence] = field(default_factory=list)
    finished: list[Sequence] = field(default_factory=list)
    """Sequences the scheduler had to end (finish_reason 'length': the KV pool cannot hold them)."""

    @property
    def num_tokens(self) -> int:
        return sum(c.length for c in self.chunks)


@dataclass
class SchedulerStats:
    retractions: int = 0
    chunked_prefills: int = 0
    cached_hit_tokens: int = 0
    prompt_tokens: int = 0


SHARE_MIN_TOKENS = 32
"""A queued request waits a step for a prefix another request is computing when it gains this many."""


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]: bisect on slice equality (C-speed compares)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class Scheduler:
    def __init__(self, config: SchedulerConfig, allocator: Allocator, cache: RadixCache | None,
                 max_context: int | None = None) -> None:
        self.config = config
        self.max_context = max_context
        """The model's context: no sequence grows past it, so no reserve counts tokens beyond it."""
        self.allocator = allocator
        self.cache = cache
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.stats = SchedulerStats()
        self._session_ttl: dict[str, float] = {}
        self._prefilled_last_step: list[Sequence] = []

    # ---- requests in and out --------------------------------------------------------------

    def add(self, seq: Sequence) -> None:
        seq.status = Status.WAITING
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def abort(self, seq: Sequence) -> None:
        if seq.status is Status.WAITING:
            self.waiting.remove(seq)
        elif seq.status is Status.RUNNING:
            self.running.remove(seq)
            self._release(seq, pin=False)
        seq.status = Status.FINISHED

    def finish(self, seq: Sequence) -> None:
        """The engine decided ``seq`` is done: hand its K/V to the cache (pinned for sessions). A
        waiting sequence (ended by the tokens its grammar forced before it ran) just leaves the queue."""
        if seq.status is Status.WAITING:
            self.waiting.remove(seq)
        else:
            self.running.remove(seq)
            self._release(seq, pin=True)
        seq.status = Status.FINISHED

    # ---- sessions -------------------------------------------------------------------------

    def open_session(self, session_id: str, ttl: float | None) -> None:
        self._session_ttl[session_id] = ttl if ttl is not None else self.config.session_ttl

    def close_session(self, session_id: str) -> None:
        """Release the session's pinned K/V now. A request of the session still in flight finishes without
        pinning it again."""
        self._session_ttl.pop(session_id, None)
        for seq in (*self.running, *self.waiting):
            if seq.session_id == session_id:
                seq.session_id = None
        if self.cache is not None:
            self.cache.unpin(session_id)

    # ---- the step -------------------------------------------------------------------------

    def schedule(self) -> Step:
        step = Step()
        if self.cache is not None:
            self.cache.expire_pins()
            for seq in self._prefilled_last_step:
                self._share(seq)
        self._prefilled_last_step = []
        self._schedule_decodes(step)
        budget = self.config.chunk_size
        for seq in self.running:
            if seq.in_prefill and budget > 0:
                budget -= self._add_chunk(step, seq, budget)
        while self.waiting and budget > 0 and len(self.running) < self.config.max_running:
            seq = self.waiting[0]
            if self._better_wait(seq) or not self._admit(seq, step):
                break
            budget -= self._add_chunk(step, seq, budget)
        if not step.chunks and self.running:
            # Nothing fits (a prefill starved by pinned sessions, say): make room, try next step.
            self._retract(self.running[-1], step)
        return step

    def _schedule_decodes(self, step: Step) -> None:
        decodes = [s for s in self.running if not s.in_prefill]
        while decodes and not self.make_room(len(decodes)):
            victim = self.running[-1]
            self._retract(victim, step)
            decodes = [s for s in decodes if s is not victim]
        for seq in decodes:
            self._add_chunk(step, seq, 1)

    def _add_chunk(self, step: Step, seq: Sequence, budget: int) -> int:
        n = min(seq.num_uncomputed, budget, self._room())
        if n <= 0:
            return 0
        self.make_room(n)
        start = seq.num_computed
        seq.slots.extend(self.allocator.alloc(n))
        seq.num_computed += n
        sample = seq.num_computed == len(seq.token_ids)
        if not seq.prefilled and seq.num_retractions == 0:
            seq.num_chunks += 1
            if sample:
                seq.prefilled = True
                if seq.num_chunks > 1:
                    self.stats.chunked_prefills += 1
        step.chunks.append(Chunk(seq, start, n, sample))
        if n > 1:
            self._prefilled_last_step.append(seq)
        return n

    def _better_wait(self, seq: Sequence) -> bool:
        """A request prefilling this step computes a longer prefix of ``seq``'s tokens than the
        cache holds: admitted next step, ``seq`` shares it instead of computing it again."""
        if self.cache is None or not self._prefilled_last_step:
            return False
        tokens = seq.token_ids
        best = max(min(_common_prefix(tokens, other.token_ids), other.num_computed)
                   for other in self._prefilled_last_step)
        if best < SHARE_MIN_TOKENS:
            return False
        cached = len(self.cache.match_prefix(tokens[: len(tokens) - 1]).slots)
        return best >= cached + SHARE_MIN_TOKENS

    def _share(self, seq: Sequence) -> None:
        """Put ``seq``'s computed K/V into the cache now, while it runs (it keeps it locked)."""
        assert self.cache is not None
        n = seq.num_computed
        if seq.status is not Status.RUNNING or n <= seq.num_tree:
            return
        existing, node = self.cache.insert(seq.token_ids[:n], seq.slots[:n])
        self.cache.lock(node)
        if seq.prefix_node is not None:
            self.cache.unlock(seq.prefix_node)
        seq.prefix_node = node
        if existing > seq.num_tree:
            # Another request cached some of these positions first: use its K/V, free our copies.
            # A new list (never an edit in place): the slot table rewrites the sequence's row.
            duplicates = seq.slots[seq.num_tree:existing]
            seq.slots = self.cache.match_prefix(seq.token_ids[:n]).slots + seq.slots[n:]
            self.allocator.free(duplicates)
        seq.num_tree = n

    def _admit(self, seq: Sequence, step: Step) -> bool:
        match_slots: list[int] = []
        if self.cache is not None:
            # Leave at least one token to compute: its logits give the next token.
            match = self.cache.match_prefix(seq.token_ids[: len(seq.token_ids) - 1])
            self.cache.lock(match.node)
            match_slots, seq.prefix_node = match.slots, match.node
        # With nothing running, admit on the tokens alone: a reserve could keep the queue stuck.
        reserve = self._reserve(seq) if self.running else 0
        need = len(seq.token_ids) - len(match_slots) + reserve
        committed = sum(s.num_uncomputed + self._reserve(s) for s in self.running)
        if committed + need > self._room():
            if self.cache is not None:
                self.cache.unlock(seq.prefix_node)
                seq.prefix_node = None
            if not self.running:
                self._unstick(seq, step)
            return False
        self.waiting.popleft()
        seq.slots = list(match_slots)
        seq.num_computed = seq.num_tree = len(match_slots)
        seq.status = Status.RUNNING
        self.running.append(seq)
        if seq.cached_tokens < 0:  # forced tokens appended before admission may match too: count the prompt's
            seq.cached_tokens = min(len(match_slots), seq.num_prompt)
            self.stats.cached_hit_tokens += seq.cached_tokens
            self.stats.prompt_tokens += seq.num_prompt
        if seq.session_id is not None and self.cache is not None:
            self.cache.unpin(seq.session_id)  # our own lock now holds the session's prefix
        return True

    def _unstick(self, seq: Sequence, step: Step) -> None:
        """Nothing runs and the head of the queue still does not fit."""
        need = len(seq.token_ids) + 1
        if need > self.allocator.num_slots:
            log.warning("request %s needs %d KV slots, the pool has %d: finishing it (length)",
                        seq.request_id, need, self.allocator.num_slots)
            self.waiting.popleft()
            seq.status, seq.finish_reason = Status.FINISHED, "length"
            step.finished.append(seq)
        elif self.cache is not None and self.cache.pinned_size > 0:
            released = self.cache.release_oldest_pin()
            log.warning("KV pool full of pinned sessions; released session %s early", released)

    def _retract(self, seq: Sequence, step: Step) -> None:
        self.running.remove(seq)
        self._release(seq, pin=False)
        seq.status = Status.WAITING
        seq.num_retractions += 1
        self.stats.retractions += 1
        self.waiting.appendleft(seq)
        step.retracted.append(seq)
        log.debug("retracted %s with %d tokens", seq.request_id, len(seq.token_ids))

    def _release(self, seq: Sequence, *, pin: bool) -> None:
        """Give back everything ``seq`` holds. Its computed K/V goes into the cache (if enabled)."""
        if self.cache is None:
            self.allocator.free(seq.slots)
        else:
            existing, node = self.cache.insert(seq.token_ids[: seq.num_computed],
                                               seq.slots[: seq.num_computed])
            self.allocator.free(seq.slots[seq.num_tree: existing])  # duplicates of cached K/V
            self.cache.unlock(seq.prefix_node)
            if pin and seq.session_id is not None:
                ttl = self._session_ttl.get(seq.session_id, self.config.session_ttl)
                self.cache.pin(seq.session_id, node, ttl)
        seq.slots, seq.num_computed, seq.num_tree, seq.prefix_node = [], 0, 0, None

    # ---- memory accounting ----------------------------------------------------------------

    def _room(self) -> int:
        evictable = self.cache.evictable_size if self.cache is not None else 0
        return self.allocator.num_free + evictable

    def make_room(self, n: int) -> bool:
        """Ensure ``n`` free slots, evicting cached prefixes if needed."""
        short = n - self.allocator.num_free
        if short > 0 and self.cache is not None:
            self.cache.evict(short)
        return self.allocator.num_free >= n

    def _reserve(self, seq: Sequence) -> int:
        remaining = max(seq.params.max_new_tokens - seq.num_output, 0)
        if self.max_context is not None:  # max_new_tokens=10**9 must not reserve the whole pool
            remaining = min(remaining, max(self.max_context - len(seq.token_ids), 0))
        return math.ceil(self.config.reserve_ratio * remaining)

