"""The Triton bitmask kernel (``engine/constrained/bitmask.py``) and the torch version the sampler
uses on CPU (``engine.sampling.apply_token_bitmask_``), both against the math written out, the
kernel run by Triton's interpreter on CPU.

``TRITON_INTERPRET`` is read when a kernel is decorated, so it must be set before the kernel module
is imported, and it must not leak into the rest of the session (GPU tests would run interpreted).
The cases therefore run in one child process with the variable set (``python -m
tests.test_bitmask_kernel``); each test below asserts one case's result.

Masking does not change allowed values, so every dtype compares exactly.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.interpreted import report, run_cases

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_VOCAB, LOGIT_ROWS = 151_665, 151_936  # Qwen2.5: the model has more logit rows than tokens

CASES: dict[str, dict[str, Any]] = {
    # name: rows of logits, vocab, mask words (default ceil(vocab / 32)), masked rows (indices), dtype
    "small": {"rows": 3, "vocab": 100},
    "one-word": {"rows": 2, "vocab": 32},
    "awkward-1823": {"rows": 7, "vocab": 1823},
    "awkward-fp16": {"rows": 5, "vocab": 1823, "dtype": "float16"},
    "awkward-bf16": {"rows": 4, "vocab": 781, "dtype": "bfloat16"},
    "indices-subset": {"rows": 6, "vocab": 1000, "indices": [4, 0, 2]},
    "mask-narrower-than-logits": {"rows": 2, "vocab": 300, "words": 5},
    "qwen-logit-rows": {"rows": 3, "vocab": LOGIT_ROWS, "tokenizer": TOKENIZER_VOCAB},
    "qwen-strided-indices": {"rows": 4, "vocab": LOGIT_ROWS, "tokenizer": TOKENIZER_VOCAB, "indices": [3, 1],
                             "strided": True},
    "sign-bit-and-extremes": {"rows": 3, "vocab": 100, "special": True},
}


def _check_case(spec: dict[str, Any]) -> str:
    """Run one case in this (interpreted) process; returns '' when the kernel matches torch."""
    import torch

    from engine.constrained.bitmask import apply_token_bitmask_triton_
    from engine.sampling import apply_token_bitmask_, bitmask_words

    g = torch.Generator().manual_seed(spec["vocab"] + spec["rows"])
    rows, vocab = spec["rows"], spec["vocab"]
    dtype = getattr(torch, spec.get("dtype", "float32"))
    indices = spec.get("indices")
    masked = len(indices) if indices is not None else rows
    words = spec.get("words", bitmask_words(vocab))
    bitmask = torch.randint(-(2**31), 2**31, (masked, words), generator=g, dtype=torch.int64).to(torch.int32)
    if "tokenizer" in spec:  # bits past the tokenizer's vocabulary are 0, as the matcher writes them
        bits = torch.ones(words * 32, dtype=torch.bool)
        bits[spec["tokenizer"]:] = False
        keep = (bits.view(words, 32).long() << torch.arange(32)).sum(dim=1)
        bitmask = (bitmask.long() & keep).to(torch.int32)
    if spec.get("special"):
        bitmask[0] = 0  # nothing allowed
        bitmask[1] = -1  # everything allowed
        bitmask[2] = 0
        bitmask[2, 0] = -(2**31)  # token 31 only: the sign bit
    logits = torch.randn(rows, vocab + 17 if spec.get("strided") else vocab, generator=g).to(dtype)
    if spec.get("strided"):
        logits = logits[:, :vocab]  # row stride != vocab
    index_tensor = torch.tensor(indices, dtype=torch.long) if indices is not None else None
    expected, torch_path, got = logits.clone(), logits.clone(), logits.clone()
    # The math, spelled out: token j of mask row b is allowed iff bit j % 32 of word j // 32 is set.
    j = torch.arange(vocab)
    word = bitmask.long()[:, (j // 32).clamp(max=words - 1)]  # [B, V]
    allowed = ((word >> (j % 32)) & 1).bool() & (j < 32 * words)
    targets = indices if indices is not None else list(range(rows))
    for b, r in enumerate(targets):
        expected[r] = expected[r].masked_fill(~allowed[b], float("-inf"))
    apply_token_bitmask_(torch_path, bitmask, index_tensor)
    apply_token_bitmask_triton_(got, bitmask, index_tensor)
    for name, result in (("torch", torch_path), ("triton", got)):
        if not torch.equal(expected, result):
            wrong = expected != result
            first = wrong.nonzero()[0].tolist()
            return f"{name}: {int(wrong.sum())} of {wrong.numel()} logits differ, first at {first}"
    if spec.get("special") and torch.isfinite(got[0]).any():
        return "a row with no bits set kept a finite logit"
    return ""


def _main() -> None:
    report(CASES, lambda _name, spec: _check_case(spec))


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str]:
    return run_cases("tests.test_bitmask_kernel", "the GPU bitmask kernel")


@pytest.mark.parametrize("case", list(CASES))
def test_kernel_matches_torch(interpreted: dict[str, str], case: str) -> None:
    assert interpreted[case] == ""


def test_launcher_rejects_bad_shapes_without_a_gpu() -> None:
    """The launcher's checks run before any kernel (no interpreter needed, nothing decorated differently)."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONWARNINGS": "ignore"}
    code = (
        "import torch\n"
        "from engine.constrained.bitmask import apply_token_bitmask_triton_ as f\n"
        "bad = [(torch.zeros(2, 64), torch.zeros(2, 2, dtype=torch.int64), None),\n"
        "       (torch.zeros(3, 64), torch.zeros(2, 2, dtype=torch.int32), None),\n"
        "       (torch.zeros(3, 64), torch.zeros(2, 2, dtype=torch.int32), torch.tensor([0])),\n"
        "       (torch.zeros(64, 3).t(), torch.zeros(3, 2, dtype=torch.int32), None)]\n"
        "for args in bad:\n"
        "    try:\n"
        "        f(*args)\n"
        "    except ValueError:\n"
        "        continue\n"
        "    raise SystemExit(f'accepted {[tuple(a.shape) for a in args if a is not None]}')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_kernel_and_sampler_on_cuda() -> None:
    """Compiled for the GPU this time; the sampler routes CUDA logits through the kernel."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from engine.constrained.bitmask import apply_token_bitmask_triton_
    from engine.sampling import Sampler, SamplingParams, SamplingRow, apply_token_bitmask_, bitmask_words

    g = torch.Generator().manual_seed(0)
    words = bitmask_words(LOGIT_ROWS)
    bitmask = torch.randint(-(2**31), 2**31, (3, words), generator=g, dtype=torch.int64).to(torch.int32)
    logits = torch.randn(5, LOGIT_ROWS, generator=g)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        indices = torch.tensor([4, 0, 2])
        expected, got = logits.to(dtype), logits.to(dtype).cuda()
        apply_token_bitmask_(expected, bitmask, indices)
        apply_token_bitmask_triton_(got, bitmask.cuda(), indices.cuda())
        assert torch.equal(got.cpu(), expected)

    class Only:
        def __init__(self, token: int) -> None:
            self.token = token

        def fill_bitmask(self, row: torch.Tensor) -> None:
            row.zero_()
            row[self.token // 32] = torch.tensor(1 << (self.token % 32)).to(torch.int32)

        def advance(self, token_id: int) -> None: ...

        def is_terminated(self) -> bool:
            return False

    sampler = Sampler(mask_threads=2, pin_memory=True)
    greedy = SamplingParams(temperature=0)
    rows = [SamplingRow(greedy, 0, constraint=Only(151_000)), SamplingRow(greedy, 0),
            SamplingRow(greedy, 0, constraint=Only(31))]
    for _ in range(3):  # the pinned buffer is reused across steps
        masks = sampler.begin_masks(rows, LOGIT_ROWS)
        chosen = sampler.sample(logits[:3].cuda(), rows, masks).token_ids
        assert chosen == [151_000, int(logits[1].argmax()), 31]


if __name__ == "__main__":
    _main()
