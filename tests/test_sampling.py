"""SamplingParams validation, the Sampler (greedy, truncation, seeds, penalties, constraints) and
the token bitmask, checked against hand-computed math on tiny crafted logits."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

import pytest
import torch

from engine.errors import InvalidRequestError
from engine.sampling import (
    Sampler,
    SamplingParams,
    SamplingRow,
    TokenConstraint,
    apply_token_bitmask_,
    bitmask_words,
)

NEG_INF = float("-inf")


# ---- helpers ------------------------------------------------------------------------------------


def softmax(values: Sequence[float], temperature: float = 1.0) -> list[float]:
    scaled = [v / temperature for v in values]
    top = max(scaled)
    exps = [math.exp(v - top) for v in scaled]
    total = sum(exps)
    return [e / total for e in exps]


def log_softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    log_total = top + math.log(sum(math.exp(v - top) for v in values))
    return [v - log_total for v in values]


def sample_one(logits: Sequence[float], params: SamplingParams, *, step: int = 0, sampler: Sampler | None = None,
               prompt_ids: Sequence[int] = (), output_ids: Sequence[int] = ()) -> int:
    sampler = sampler or Sampler()
    row = SamplingRow(params, step, prompt_ids, output_ids)
    return sampler.sample(torch.tensor([list(logits)], dtype=torch.float32), [row]).token_ids[0]


def draw_many(logits: Sequence[float], n: int, **kwargs) -> list[int]:  # type: ignore[no-untyped-def]
    """n draws in one batch, each row with its own seed (so each row is an independent draw)."""
    rows = [SamplingRow(SamplingParams(seed=1000 + i, **kwargs), 0) for i in range(n)]
    batch = torch.tensor([list(logits)] * n, dtype=torch.float32)
    return Sampler().sample(batch, rows).token_ids


def frequencies(tokens: Iterable[int], vocab: int) -> list[float]:
    tokens = list(tokens)
    counts = Counter(tokens)
    return [counts[i] / len(tokens) for i in range(vocab)]


def to_int32(word: int) -> int:
    """An unsigned 32-bit pattern as the signed int32 torch stores."""
    return word - (1 << 32) if word >= (1 << 31) else word


def make_bitmask(allowed: Iterable[int], vocab: int) -> list[int]:
    """Built from the documented layout: bit j of word w allows token 32 * w + j."""
    words = [0] * ((vocab + 31) // 32)
    for t in allowed:
        words[t // 32] |= 1 << (t % 32)
    return [to_int32(w) for w in words]


# ---- SamplingParams validation ------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [
    ("max_new_tokens", 0),
    ("max_new_tokens", -5),
    ("max_new_tokens", 1.5),
    ("temperature", -1),
    ("temperature", float("inf")),
    ("temperature", float("nan")),
    ("temperature", 3.5e38),  # overflows float32 in the sampler: NaN probabilities
    ("top_p", 0),
    ("top_p", 1.5),
    ("top_k", -2),
    ("top_k", 2.0),
    ("min_p", 2),
    ("min_p", -0.1),
    ("repetition_penalty", 0),
    ("repetition_penalty", -1.0),
    ("frequency_penalty", 3),
    ("frequency_penalty", -2.5),
    ("presence_penalty", 2.01),
    ("seed", "x"),
    ("seed", 1.0),
    ("stop", [""]),
    ("stop", ["ok", ""]),
    ("stop_token_ids", [-1]),
])
def test_invalid_params(field: str, value: object) -> None:
    with pytest.raises(InvalidRequestError) as info:
        SamplingParams(**{field: value})  # type: ignore[arg-type]
    err = info.value
    assert isinstance(err, ValueError)
    assert err.field == field
    assert field in str(err)
    assert err.code == "invalid_request"


def test_boundary_params_are_valid() -> None:
    for kwargs in [dict(temperature=0), dict(top_p=1.0), dict(top_p=1e-6), dict(top_k=0), dict(top_k=-1),
                   dict(top_k=1), dict(min_p=0.0), dict(min_p=1.0), dict(frequency_penalty=-2),
                   dict(presence_penalty=2), dict(repetition_penalty=1e-3), dict(max_new_tokens=1),
                   dict(seed=0), dict(seed=-7), dict(seed=2**63)]:
        SamplingParams(**kwargs)  # type: ignore[arg-type]


def test_params_normalization() -> None:
    p = SamplingParams(stop="END", stop_token_ids=[5, 6])
    assert p.stop == ("END",)
    assert tuple(p.stop_token_ids) == (5, 6)
    assert SamplingParams(temperature=0).greedy and not SamplingParams(temperature=0.5).greedy
    assert not SamplingParams().has_penalties
    assert SamplingParams(presence_penalty=0.1).has_penalties


# ---- greedy and truncation ----------------------------------------------------------------------

LOGITS = [0.3, 2.5, -1.0, 2.4, 0.0, 1.9, -3.0, 2.45]  # argmax 1, close runners-up 7 and 3


def test_greedy_picks_argmax() -> None:
    assert sample_one(LOGITS, SamplingParams(temperature=0)) == 1
    # Batch of rows with different argmaxes.
    rows = [[5.0, 1.0, 2.0], [1.0, 2.0, 7.0], [0.0, 0.5, -0.5], [-3.0, -1.0, -2.0]]
    out = Sampler().sample(torch.tensor(rows), [SamplingRow(SamplingParams(temperature=0), 0)] * 4)
    assert out.token_ids == [0, 2, 1, 1]
    assert out.logprobs is None


def test_top_k_1_is_argmax_whatever_the_temperature() -> None:
    for temperature in (0.5, 1.0, 5.0, 100.0):
        tokens = draw_many(LOGITS, 200, temperature=temperature, top_k=1)
        assert set(tokens) == {1}


def test_tiny_top_p_is_argmax() -> None:
    tokens = draw_many(LOGITS, 200, temperature=3.0, top_p=1e-4)
    assert set(tokens) == {1}


def test_top_k_2_only_samples_the_top_two() -> None:
    logits = [1.0, 2.0, 0.5, 1.8, 1.7]
    tokens = draw_many(logits, 3000, temperature=1.0, top_k=2)
    assert set(tokens) == {1, 3}
    # Renormalized over the two survivors: p(1) = e^2 / (e^2 + e^1.8).
    p1 = math.exp(2.0) / (math.exp(2.0) + math.exp(1.8))
    assert abs(tokens.count(1) / len(tokens) - p1) < 0.03


def test_top_p_keeps_the_smallest_nucleus() -> None:
    probs = [0.05, 0.5, 0.15, 0.3]
    logits = [math.log(p) for p in probs]
    # Sorted: 0.5, 0.3, 0.15, 0.05; mass before each: 0, 0.5, 0.8, 0.95.
    assert set(draw_many(logits, 1500, top_p=0.7)) == {1, 3}
    assert set(draw_many(logits, 1500, top_p=0.85)) == {1, 3, 2}
    tokens = draw_many(logits, 3000, top_p=0.7)
    assert abs(tokens.count(1) / len(tokens) - 0.5 / 0.8) < 0.03


def test_min_p_drops_unlikely_tokens() -> None:
    probs = [0.05, 0.5, 0.15, 0.3]
    logits = [math.log(p) for p in probs]
    # min_p 0.2: threshold 0.1, only token 0 (0.05) goes.
    assert set(draw_many(logits, 2000, min_p=0.2)) == {1, 2, 3}
    # min_p 0.5: threshold 0.25, tokens 0 and 2 go.
    tokens = draw_many(logits, 2000, min_p=0.5)
    assert set(tokens) == {1, 3}
    assert abs(tokens.count(3) / len(tokens) - 0.3 / 0.8) < 0.03
    # min_p applies to the distribution after temperature: at T=2 p ∝ sqrt(p): token 0 is sqrt(0.1) ≈ 0.32 of the max.
    sharp = softmax(logits, 2.0)
    assert sharp[0] / max(sharp) > 0.3
    assert 0 in set(draw_many(logits, 2000, temperature=2.0, min_p=0.3))
    assert 0 not in set(draw_many(logits, 2000, temperature=2.0, min_p=0.35))


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.5])
def test_sampling_distribution_matches_softmax(temperature: float) -> None:
    logits = [1.0, 0.2, -0.5, 0.6]
    expected = softmax(logits, temperature)
    observed = frequencies(draw_many(logits, 4000, temperature=temperature), 4)
    for e, o in zip(expected, observed, strict=True):
        assert abs(e - o) < 0.03, (expected, observed)


def test_unseeded_sampling_distribution() -> None:
    """Rows without a seed draw from the sampler's own generator: still the right distribution."""
    logits = [0.0, 1.0, 0.5, -1.0]
    sampler = Sampler(seed=1234)
    batch = torch.tensor([logits] * 100)
    rows = [SamplingRow(SamplingParams(temperature=1.0), 0)] * 100
    tokens = [t for _ in range(40) for t in sampler.sample(batch.clone(), rows).token_ids]
    for e, o in zip(softmax(logits), frequencies(tokens, 4), strict=True):
        assert abs(e - o) < 0.03


# ---- seeds --------------------------------------------------------------------------------------

UNIFORM = [0.0] * 1000  # every token equally likely: any change in the noise shows


def test_same_seed_same_step_same_token() -> None:
    p = SamplingParams(seed=42)
    first = [sample_one(UNIFORM, p, step=s) for s in range(10)]
    again = [sample_one(UNIFORM, p, step=s, sampler=Sampler(seed=99)) for s in range(10)]
    assert first == again
    # Different steps give different draws (10 uniform draws out of 1000: collisions are rare).
    assert len(set(first)) >= 8
    # Different seeds give different draws.
    other = [sample_one(UNIFORM, SamplingParams(seed=43), step=s) for s in range(10)]
    assert sum(a != b for a, b in zip(first, other, strict=True)) >= 8


def test_seeded_row_independent_of_batch_company() -> None:
    target = SamplingParams(seed=7, temperature=0.9, top_k=500)
    alone = [sample_one(UNIFORM, target, step=s) for s in range(5)]
    others = [SamplingParams(temperature=0), SamplingParams(temperature=1.3, top_p=0.5),
              SamplingParams(seed=8), SamplingParams(temperature=0.5, min_p=0.5, seed=1)]
    sampler = Sampler(seed=5)
    for position in range(5):
        for s in range(5):
            params = [*others[:position], target, *others[position:]]
            rows = [SamplingRow(p, s) for p in params]
            logits = torch.randn(5, 1000, generator=torch.Generator().manual_seed(s))
            logits[position] = torch.tensor(UNIFORM)
            out = sampler.sample(logits, rows).token_ids
            assert out[position] == alone[s], (position, s)


# ---- penalties ----------------------------------------------------------------------------------


def greedy(logits: Sequence[float], prompt_ids: Sequence[int] = (), output_ids: Sequence[int] = (),
           **kwargs) -> int:  # type: ignore[no-untyped-def]
    return sample_one(logits, SamplingParams(temperature=0, **kwargs), prompt_ids=prompt_ids, output_ids=output_ids)


def test_repetition_penalty_divides_positive_logits() -> None:
    logits = [2.0, 1.5, -0.5]
    assert greedy(logits) == 0
    # Seen in the output: 2.0 / 2 = 1.0 < 1.5.
    assert greedy(logits, output_ids=[0], repetition_penalty=2.0) == 1
    # Seen in the prompt counts too.
    assert greedy(logits, prompt_ids=[0, 2], repetition_penalty=2.0) == 1
    # 2.0 / 1.25 = 1.6 > 1.5: still token 0.
    assert greedy(logits, output_ids=[0], repetition_penalty=1.25) == 0
    # Penalty < 1 rewards repetition: 1.5 / 0.5 = 3.0 > 2.0.
    assert greedy(logits, output_ids=[1], repetition_penalty=0.5) == 1
    # Unseen tokens are untouched.
    assert greedy(logits, output_ids=[2], repetition_penalty=10.0) == 0


def test_repetition_penalty_multiplies_negative_logits() -> None:
    logits = [-1.0, -1.2, -3.0]
    # Multiplying: -1.0 * 1.5 = -1.5 < -1.2 → token 1 (dividing would give -0.67 and keep token 0).
    assert greedy(logits, output_ids=[0], repetition_penalty=1.5) == 1
    # -1.0 * 1.1 = -1.1 > -1.2 → still token 0.
    assert greedy(logits, output_ids=[0], repetition_penalty=1.1) == 0
    # Seen negative token with penalty < 1 gets closer to 0: -1.2 * 0.5 = -0.6 > -1.0.
    assert greedy(logits, prompt_ids=[1], repetition_penalty=0.5) == 1


def test_frequency_penalty_counts_occurrences() -> None:
    logits = [3.0, 2.0, 1.9]
    # 3 - 0.3 * 3 = 2.1 > 2.0
    assert greedy(logits, output_ids=[0, 0, 0], frequency_penalty=0.3) == 0
    # 3 - 0.4 * 3 = 1.8 < 2.0
    assert greedy(logits, output_ids=[0, 0, 0], frequency_penalty=0.4) == 1
    # One occurrence only: 3 - 0.4 = 2.6
    assert greedy(logits, output_ids=[0], frequency_penalty=0.4) == 0
    # Tokens 0 (x3) and 1 (x2): 3 - 1.5 = 1.5, 2 - 1.0 = 1.0, 1.9 → token 2.
    assert greedy(logits, output_ids=[0, 1, 0, 1, 0], frequency_penalty=0.5) == 2
    # Negative penalty encourages repeats: 2.0 + 2 * 0.6 = 3.2 > 3.0.
    assert greedy(logits, output_ids=[1, 1], frequency_penalty=-0.6) == 1


def test_presence_penalty_counts_once() -> None:
    logits = [3.0, 2.0, 1.9]
    # Presence is counted once however often: 3 - 0.9 = 2.1 > 2.0 even after 5 occurrences.
    assert greedy(logits, output_ids=[0] * 5, presence_penalty=0.9) == 0
    assert greedy(logits, output_ids=[0] * 5, presence_penalty=1.1) == 1
    # Combined, OpenAI's definition: logit - count * freq - (count > 0) * presence.
    # token 0: 3 - 2 * 0.3 - 0.2 = 2.2; token 1: 2 - 1 * 0.3 - 0.2 = 1.5; token 2: 1.9 → 0.
    assert greedy(logits, output_ids=[0, 1, 0], frequency_penalty=0.3, presence_penalty=0.2) == 0
    # token 0: 3 - 2 * 0.5 - 0.2 = 1.8 < 1.9 → 2.
    assert greedy(logits, output_ids=[0, 1, 0], frequency_penalty=0.5, presence_penalty=0.2) == 2


def test_frequency_and_presence_ignore_the_prompt() -> None:
    """OpenAI penalties count generated tokens only."""
    logits = [3.0, 2.0]
    assert greedy(logits, prompt_ids=[0, 0, 0], frequency_penalty=2.0, presence_penalty=2.0) == 0


def test_penalties_are_per_row() -> None:
    logits = torch.tensor([[2.0, 1.5, 0.0]] * 2)
    rows = [SamplingRow(SamplingParams(temperature=0, repetition_penalty=2.0), 0, [0], [0]),
            SamplingRow(SamplingParams(temperature=0), 0, [0], [0])]
    assert Sampler().sample(logits, rows).token_ids == [1, 0]


# ---- token bitmask ------------------------------------------------------------------------------


@pytest.mark.parametrize("vocab", [100, 32, 64, 151936, 151665])
def test_bitmask_layout(vocab: int) -> None:
    g = torch.Generator().manual_seed(vocab)
    allowed = {0, 31, min(32, vocab - 1), vocab - 1}
    if vocab > 64:
        allowed |= {63, 64}
    allowed |= set(torch.randint(0, vocab, (min(vocab // 3, 500),), generator=g).tolist())
    logits = torch.randn(2, vocab, generator=g)
    original = logits.clone()
    words = bitmask_words(vocab)
    assert words == math.ceil(vocab / 32)
    mask = torch.tensor([make_bitmask(allowed, vocab), [-1] * words], dtype=torch.int32)
    apply_token_bitmask_(logits, mask)

    allowed_row = torch.zeros(vocab, dtype=torch.bool)
    allowed_row[sorted(allowed)] = True
    assert torch.equal(logits[0][allowed_row], original[0][allowed_row])
    assert torch.isneginf(logits[0][~allowed_row]).all()
    assert torch.equal(logits[1], original[1])  # all bits set: nothing masked


def test_bitmask_sign_bit_is_token_31() -> None:
    vocab = 100
    mask = torch.zeros(1, 4, dtype=torch.int32)
    mask[0, 0] = -(2**31)  # only bit 31 of word 0
    mask[0, 1] = 1  # bit 0 of word 1 → token 32
    mask[0, 3] = 1 << 3  # token 99
    logits = torch.arange(vocab, dtype=torch.float32).unsqueeze(0)
    apply_token_bitmask_(logits, mask)
    finite = torch.isfinite(logits[0]).nonzero().flatten().tolist()
    assert finite == [31, 32, 99]
    assert logits[0, 31].item() == 31.0 and logits[0, 99].item() == 99.0


def test_bitmask_padding_bits_past_vocab_are_ignored() -> None:
    vocab = 100
    mask = torch.tensor([make_bitmask([5], vocab)], dtype=torch.int32)
    mask[0, 3] |= to_int32(0xFFFFFFF0)  # bits 4..31 of word 3: tokens 100..127, past the vocabulary
    logits = torch.zeros(1, vocab)
    apply_token_bitmask_(logits, mask)
    assert logits.shape == (1, vocab)
    assert torch.isfinite(logits[0]).nonzero().flatten().tolist() == [5]


class AllowSet:
    """A constraint that allows a fixed token set, written against the documented protocol."""

    def __init__(self, allowed: Iterable[int]) -> None:
        self.allowed = sorted(set(allowed))
        self.seen: list[int] = []

    def fill_bitmask(self, bitmask: torch.Tensor) -> None:
        bitmask.zero_()
        for t in self.allowed:
            word = int(bitmask[t // 32].item()) & 0xFFFFFFFF
            bitmask[t // 32] = to_int32(word | (1 << (t % 32)))

    def advance(self, token_id: int) -> None:
        self.seen.append(token_id)

    def is_terminated(self) -> bool:
        return False


def test_constraint_restricts_sampling() -> None:
    vocab = 200
    allowed = [3, 31, 63, 64, 150, 199]
    constraint = AllowSet(allowed)
    assert isinstance(constraint, TokenConstraint)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, vocab, generator=g) * 3
    logits[0, 10] = 50.0  # by far the most likely, but not allowed
    sampler = Sampler(seed=3)
    seen = Counter()
    for i in range(300):
        params = SamplingParams(temperature=2.0, seed=i)
        seen.update(sampler.sample(logits.clone(), [SamplingRow(params, 0, constraint=constraint)]).token_ids)
    assert set(seen) <= set(allowed)
    assert len(seen) >= 3  # really sampling within the set, not stuck on one token
    # Greedy under the constraint: the best allowed logit.
    best = max(allowed, key=lambda t: logits[0, t].item())
    row = SamplingRow(SamplingParams(temperature=0), 0, constraint=constraint)
    assert sampler.sample(logits.clone(), [row]).token_ids == [best]


def test_constraint_only_affects_its_row() -> None:
    vocab = 64
    logits = torch.zeros(3, vocab)
    logits[:, 40] = 10.0
    rows = [SamplingRow(SamplingParams(temperature=0), 0),
            SamplingRow(SamplingParams(temperature=0), 0, constraint=AllowSet([1, 33])),
            SamplingRow(SamplingParams(temperature=0), 0)]
    logits[1, 33] = 0.5
    assert Sampler().sample(logits, rows).token_ids == [40, 33, 40]


# ---- vocab limit --------------------------------------------------------------------------------


def test_vocab_limit_masks_padded_ids() -> None:
    vocab, limit = 64, 50
    logits = torch.zeros(1, vocab)
    logits[0, limit:] = 100.0  # the padded rows are the most likely by far
    logits[0, 7] = 1.0
    sampler = Sampler(vocab_limit=limit)
    assert sampler.sample(logits.clone(), [SamplingRow(SamplingParams(temperature=0), 0)]).token_ids == [7]
    batch = logits.repeat(500, 1)
    rows = [SamplingRow(SamplingParams(temperature=1.5, seed=i), 0) for i in range(500)]
    tokens = sampler.sample(batch, rows).token_ids
    assert max(tokens) < limit
    assert len(set(tokens)) > 10


# ---- logprobs -----------------------------------------------------------------------------------


def test_logprobs_are_of_the_raw_distribution() -> None:
    raw = [[0.5, 2.0, -1.0, 1.0, 0.0], [1.0, 1.0, 3.0, -2.0, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]]
    rows = [SamplingRow(SamplingParams(temperature=0, logprobs=True, repetition_penalty=5.0), 0, [1], [1]),
            SamplingRow(SamplingParams(temperature=0.8, top_k=2, seed=3, logprobs=True), 0),
            SamplingRow(SamplingParams(temperature=0, frequency_penalty=2.0), 0, (), [4, 4])]
    out = Sampler().sample(torch.tensor(raw), rows)
    assert out.logprobs is not None and len(out.logprobs) == 3
    # Row 0: token 1 penalized (2.0 / 5 = 0.4) → greedy picks token 3; logprob from the raw logits.
    assert out.token_ids[0] == 3
    # Row 2: 0.5 - 4 = -3.5 → greedy picks token 3.
    assert out.token_ids[2] == 3
    assert out.token_ids[1] in (2, 0, 1)
    for i in range(3):
        expected = log_softmax(raw[i])[out.token_ids[i]]
        assert out.logprobs[i] == pytest.approx(expected, abs=1e-5)


# ---- the top-k / top-p candidate shortcut against a full-sort reference ---------------------------


def _nucleus_reference(probs: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Kept-token mask by the textbook definition: sort all tokens, keep the top k, and of those the
    smallest prefix whose mass reaches top_p."""
    keep = torch.zeros_like(probs, dtype=torch.bool)
    values, order = probs.sort(descending=True)
    mass = 0.0
    for rank, (v, i) in enumerate(zip(values.tolist(), order.tolist(), strict=True)):
        if (top_k > 0 and rank >= top_k) or mass >= top_p:
            break
        keep[i] = True
        mass += v
    return keep


@pytest.mark.parametrize("sharpness", [0.3, 4.0])  # flat (nucleus beyond 1024 candidates) / peaked
@pytest.mark.parametrize(("top_k", "top_p"), [(0, 0.9), (50, 1.0), (2000, 0.95), (0, 0.5)])
def test_top_k_top_p_candidates_match_full_sort(sharpness: float, top_k: int, top_p: float) -> None:
    from engine.sampling import TOP_CANDIDATES, _top_k_top_p

    vocab = 5 * TOP_CANDIDATES
    g = torch.Generator().manual_seed(int(sharpness * 10) + top_k)
    probs = torch.softmax(torch.randn(3, vocab, generator=g, dtype=torch.float64) * sharpness, dim=-1).float()
    params = [SamplingParams(top_k=top_k, top_p=top_p)] * 3
    out = _top_k_top_p(probs.clone(), params)
    for row in range(3):
        expected = _nucleus_reference(probs[row].double(), top_k, top_p)
        assert torch.equal(out[row] > 0, expected)
        assert torch.equal(out[row][expected], probs[row][expected])  # kept tokens keep their mass
