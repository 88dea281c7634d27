"""``EngineConfig``: every knob of an engine, validated at construction (``ValueError``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from engine.scheduler import SchedulerConfig


@dataclass
class EngineConfig:
    model: str = "demo"
    """A Hugging Face checkpoint directory, or ``demo`` for the built-in random-weight model."""
    device: str = "cpu"
    """``cpu``, ``cuda`` or ``cuda:N``."""
    dtype: str | None = None
    """``float32``, ``bfloat16`` or ``float16``; default float32 on CPU, the checkpoint's half type on CUDA."""
    tokenizer: str | None = None
    """Tokenizer directory, if not the model's own."""
    max_kv_tokens: int | None = None
    """KV pool size in tokens; default from ``kv_memory_fraction``."""
    kv_memory_fraction: float | None = None
    """Share of free memory for the KV pool when ``max_kv_tokens`` is not set (CUDA 0.85, CPU 0.1)."""
    chunk_size: int | None = None
    """Most prompt tokens prefilled per step; longer prompts are prefilled over several steps.
    Default 512 on CPU, 8192 on CUDA (a GPU step of 512 tokens is far from compute-bound, and 64
    agent sessions each adding a tool result should be prefilled in one or two steps, not twenty)."""
    max_running: int = 256
    """Most requests decoding at once."""
    reserve_ratio: float = 0.5
    """Share of each running request's remaining ``max_new_tokens`` kept free when admitting more."""
    enable_prefix_cache: bool = True
    """Reuse K/V of shared prefixes through the radix cache."""
    session_ttl: float = 60.0
    """Seconds a finished session's K/V stays pinned for its next request."""
    max_pinned_tokens: int | None = None
    """Cap on tokens pinned by sessions (default: half the pool); the oldest pins go first."""
    max_model_len: int | None = None
    """Context limit in tokens; default the model's ``max_position_embeddings``."""
    seed: int = 0
    """Seed for requests that do not bring their own."""
    fast_forward: bool | None = None
    """Constrained decoding: when the grammar forces the next text (a JSON schema's keys, say),
    append its tokens without sampling them and compute their K/V in one multi-token step. The
    output is the same token for token; it takes fewer steps. Requests that ask for logprobs decode
    forced tokens one by one regardless (fast-forward computes no logits at forced positions).
    Default on for CPU, off on CUDA: there a multi-token step cannot replay a decode CUDA graph, and
    one eager step costs more than the graph-replayed decodes of the tokens it saves."""
    load_format: str = "auto"
    """``auto`` reads the checkpoint's safetensors; ``dummy`` builds random weights from ``config.json``
    alone (benchmarks of a model's shape without its weights)."""
    cuda_graphs: bool = True
    """On CUDA, replay captured CUDA graphs for decode-only steps (batch sizes up to
    ``cuda_graph_max_batch``, padded to the next captured size). Off: every step runs eagerly."""
    cuda_graph_max_batch: int = 256
    """Largest decode batch run through a CUDA graph; larger batches run eagerly."""
    record_gpu_timeline: bool = False
    """Record CUDA events around every forward pass so ``Engine.gpu_idle_gaps`` can report how long
    the GPU waited for the CPU between steps (benchmarks; costs a little per step)."""
    overlap: bool | None = None
    """Detokenize a step's tokens and build their deltas while the GPU runs the next step, for
    requests without stop strings (whose text cannot end them); their deltas arrive one step later.
    Default: on for CUDA, off on CPU (nothing to overlap with)."""
    prefill_attention: Literal["sdpa", "triton"] = "sdpa"
    """Attention of prefill chunks on CUDA. ``sdpa``: per chunk, gather its context from the KV pool
    and call torch's ``scaled_dot_product_attention``. ``triton``: every chunk of the step in one launch
    of the paged extend kernel (``engine.attention.triton_extend``), reading K/V through the slot
    table without gathering. ``bench/engine_gpu.py``'s prefill section measures both; the default
    stays ``sdpa`` until a GPU run shows the kernel faster. On CPU, ``triton`` runs only under
    ``TRITON_INTERPRET=1`` (Triton's interpreter: tests), and is refused otherwise."""
    fused_gemv: bool = False
    """Steps of at most 16 tokens (decode at small batch) run each projection as a Triton kernel
    (``engine.kernels.gemv``) with the RMSNorms, residual adds and SiLU·mul fused into the projections
    that read them: four launches per layer besides attention instead of eight. Off until the GPU
    benchmark (``bench/engine_gpu.py``, decode section) shows it faster than cuBLAS and the separate
    kernels. On CPU only under ``TRITON_INTERPRET=1`` (tests)."""
    mask_threads: int = 1
    """Worker threads filling grammar masks while the forward pass runs; 0 fills them after the
    forward, on the engine thread (no overlap). Default 1: on an H100 host (16 cores), 64 JSON-schema
    requests decoded at 3,138 tok/s with one worker, 2,613 with none, 2,404 with two and 2,486 with
    eight (the workers contend for the GIL with the engine thread)."""

    def __post_init__(self) -> None:
        on_gpu = isinstance(self.device, str) and self.device.startswith("cuda")
        if self.chunk_size is None:
            self.chunk_size = 8192 if on_gpu else 512
        if self.fast_forward is None:
            self.fast_forward = not on_gpu
        self.scheduler_config()  # validates chunk_size, max_running, reserve_ratio, session_ttl
        _positive("max_kv_tokens", self.max_kv_tokens, allow_none=True)
        _positive("max_pinned_tokens", self.max_pinned_tokens, allow_none=True, allow_zero=True)
        _positive("max_model_len", self.max_model_len, allow_none=True)
        if self.kv_memory_fraction is not None and not 0 < self.kv_memory_fraction <= 1:
            raise ValueError(f"kv_memory_fraction must be in (0, 1], got {self.kv_memory_fraction}")
        _positive("mask_threads", self.mask_threads, allow_zero=True)
        _positive("cuda_graph_max_batch", self.cuda_graph_max_batch)
        if self.load_format not in ("auto", "dummy"):
            raise ValueError(f"load_format must be 'auto' or 'dummy', got {self.load_format!r}")
        if self.prefill_attention not in ("sdpa", "triton"):
            raise ValueError(f"prefill_attention must be 'sdpa' or 'triton', got {self.prefill_attention!r}")
        if self.overlap is not None and not isinstance(self.overlap, bool):
            raise ValueError(f"overlap must be True, False or None, got {self.overlap!r}")
        for name in ("cuda_graphs", "record_gpu_timeline", "fused_gemv"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        interpreted = os.environ.get("TRITON_INTERPRET") == "1"
        for option, asked in (("prefill_attention='triton'", self.prefill_attention == "triton"),
                              ("fused_gemv=True", self.fused_gemv)):
            if asked and not on_gpu and not interpreted:
                raise ValueError(f"{option} needs a CUDA device (on CPU, Triton kernels run only interpreted, "
                                 "with TRITON_INTERPRET=1)")
        if not isinstance(self.fast_forward, bool):
            raise ValueError(f"fast_forward must be True or False, got {self.fast_forward!r}")
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a checkpoint path or 'demo', got {self.model!r}")

    def scheduler_config(self) -> SchedulerConfig:
        assert self.chunk_size is not None  # resolved in __post_init__
        return SchedulerConfig(chunk_size=self.chunk_size, max_running=self.max_running,
                               reserve_ratio=self.reserve_ratio, session_ttl=self.session_ttl)


def _positive(name: str, value: object, *, allow_none: bool = False, allow_zero: bool = False) -> None:
    if value is None and allow_none:
        return
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
