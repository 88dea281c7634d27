"""``Engine``: the synchronous step loop.

One request's path: ``add_request`` (tokenize, validate) → scheduler queue → admission (prefix
match, KV budget) → prefill in chunks → decode steps in the continuous batch → sampling → text
(incremental detokenization, stop strings) → ``Delta`` per step → ``Output`` at the end.

``AsyncEngine`` (``engine/async_engine.py``) runs this loop on a background thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from engine.config import EngineConfig
from engine.constrained.compiler import compile_constraint
from engine.constrained.spec import ConstraintSpec
from engine.demo import resolve_model_path
from engine.errors import InvalidRequestError, RequestNotFoundError
from engine.kv_cache import KVLayout, KVPool, SlotAllocator, size_kv_pool
from engine.model.loader import load_model
from engine.radix_cache import RadixCache
from engine.request import Delta, Output, Request
from engine.runner import ModelRunner
from engine.sampling import Sampler, SamplingParams, SamplingRow, TokenConstraint
from engine.scheduler import Chunk, Scheduler
from engine.sequence import Sequence, Status
from engine.tokenizer import IncrementalDetokenizer, OutputText, Tokenizer

log = logging.getLogger(__name__)


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: CUDA is not available on this machine (torch {torch.__version__})")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    return device


@dataclass
class EngineStats:
    running: int
    waiting: int
    kv_used: int
    """Slots not free: held by running requests or by the prefix cache."""
    kv_total: int
    kv_free: int
    cached_tokens: int
    """Slots held by the prefix cache."""
    evictable_tokens: int
    pinned_tokens: int
    cached_hit_tokens: int
    """Prompt tokens served from the prefix cache, summed over admitted requests."""
    prompt_tokens: int
    generated_tokens: int
    retractions: int
    chunked_prefills: int
    steps: int


class Engine:
    def __init__(self, model: str = "demo", *, device: str = "cpu", dtype: str | None = None,
                 max_kv_tokens: int | None = None, chunk_size: int = 512, seed: int = 0,
                 **options: object) -> None:
        """Load ``model`` (a HF checkpoint directory or ``demo``). Further keyword options are the
        fields of ``EngineConfig``."""
        self.config = EngineConfig(model=model, device=device, dtype=dtype, max_kv_tokens=max_kv_tokens,
                                   chunk_size=chunk_size, seed=seed, **options)  # type: ignore[arg-type]
        cfg = self.config
        self.device = _device(cfg.device)
        path = resolve_model_path(cfg.model)
        self.model = load_model(path, device=self.device, dtype=cfg.dtype)
        mcfg = self.model.config
        tok_path = resolve_model_path(cfg.tokenizer) if cfg.tokenizer else path
        self.tokenizer = Tokenizer(tok_path) if Tokenizer.find(tok_path) else None
        self.eos_token_ids = frozenset(self.tokenizer.eos_token_ids if self.tokenizer else mcfg.eos_token_ids)
        self.max_model_len = min(cfg.max_model_len or mcfg.max_position, mcfg.max_position)

        dtype_ = next(self.model.parameters()).dtype
        layout = KVLayout(mcfg.num_layers, mcfg.num_kv_heads, mcfg.head_dim, dtype_)
        fraction = cfg.kv_memory_fraction or (0.85 if self.device.type == "cuda" else 0.1)
        num_slots = size_kv_pool(layout, self.device, max_kv_tokens=cfg.max_kv_tokens,
                                 memory_fraction=fraction, max_context=self.max_model_len)
        self.kv = KVPool(layout, num_slots, self.device)
        self.allocator = SlotAllocator(num_slots)
        max_pinned = cfg.max_pinned_tokens if cfg.max_pinned_tokens is not None else num_slots // 2
        self.cache = RadixCache(self.allocator, max_pinned_tokens=max_pinned) if cfg.enable_prefix_cache else None
        self.scheduler = Scheduler(cfg.scheduler_config(), self.allocator, self.cache)
        self.runner = ModelRunner(self.model, self.kv, self.device)
        vocab_limit = self.tokenizer.vocab_size if self.tokenizer else None
        self.sampler = Sampler(seed=cfg.seed, vocab_limit=vocab_limit)
        self._seqs: dict[str, Sequence] = {}
        self._steps = 0
        self._generated = 0

    # ---- requests -------------------------------------------------------------------------

    def prepare(self, request: Request) -> Sequence:
        """Tokenize and validate ``request`` without queueing it (thread-safe)."""
        params = request.params
        if not isinstance(params, SamplingParams):
            raise InvalidRequestError(f"must be SamplingParams, got {type(params).__name__}", field="params")
        constraint = request.constraint
        if constraint is not None and not isinstance(constraint, (ConstraintSpec, TokenConstraint)):
            raise InvalidRequestError("must be a ConstraintSpec or implement fill_bitmask / advance / "
                                      "is_terminated", field="constraint")
        if params.stop and self.tokenizer is None:
            raise InvalidRequestError("stop strings need a tokenizer; this model has none", field="stop")
        prompt_ids = self._tokenize(request)
        if len(prompt_ids) >= self.max_model_len:
            raise InvalidRequestError(
                f"has {len(prompt_ids)} tokens; the context is {self.max_model_len} tokens, "
                "which leaves no room to generate", field="prompt")
        if len(prompt_ids) + 1 > self.allocator.num_slots:
            raise InvalidRequestError(
                f"needs {len(prompt_ids) + 1} KV slots; the KV pool has {self.allocator.num_slots} "
                "(raise max_kv_tokens)", field="prompt")
        if isinstance(constraint, ConstraintSpec):  # compiled last: the costliest check
            constraint = compile_constraint(constraint, self._require_tokenizer("constraint"))
        seq = Sequence(request.request_id, prompt_ids, params, session_id=request.session_id,
                       constraint=constraint, arrival=time.monotonic())
        if self.tokenizer is not None:
            detok = IncrementalDetokenizer(self.tokenizer, prompt_ids,
                                           skip_special_tokens=params.skip_special_tokens)
            seq.detok = OutputText(detok, params.stop, params.include_stop_str_in_output)
        return seq

    def _tokenize(self, request: Request) -> list[int]:
        if (request.prompt is None) == (request.messages is None):
            raise InvalidRequestError("give exactly one of prompt or messages", field="prompt")
        if request.messages is not None:
            if not isinstance(request.messages, list) or not request.messages:
                raise InvalidRequestError("must be a non-empty list of messages", field="messages")
            tok = self._require_tokenizer("messages")
            ids = tok.encode_chat(request.messages, tools=request.tools, **(request.chat_template_kwargs or {}))
        elif isinstance(request.prompt, str):
            if not request.prompt:
                raise InvalidRequestError("must not be empty", field="prompt")
            ids = self._require_tokenizer("prompt").encode(request.prompt)
        else:
            ids = list(request.prompt or ())
            vocab = self.model.config.vocab_size
            bad = next((t for t in ids if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < vocab), None)
            if bad is not None:
                raise InvalidRequestError(f"token id {bad!r} is outside the vocabulary [0, {vocab})",
                                          field="prompt")
        if not ids:
            raise InvalidRequestError("must not be empty (it encodes to no tokens)", field="prompt")
        return ids

    def _require_tokenizer(self, field_name: str) -> Tokenizer:
        if self.tokenizer is None:
            raise InvalidRequestError(f"the model at {self.config.model} has no tokenizer; "
                                      "send token ids, or pass tokenizer=", field=field_name)
        return self.tokenizer

    def add_request(self, request: Request | Sequence) -> str:
        """Queue a request (or a sequence from ``prepare``). Returns its id."""
        seq = request if isinstance(request, Sequence) else self.prepare(request)
        if seq.request_id in self._seqs:
            raise InvalidRequestError(f"{seq.request_id!r} is already in flight", field="request_id")
        self._seqs[seq.request_id] = seq
        self.scheduler.add(seq)
        return seq.request_id

    def abort(self, request_id: str) -> Delta:
        """Stop a request now and free what it holds. Returns its final delta."""
        seq = self._seqs.pop(request_id, None)
        if seq is None:
            raise RequestNotFoundError(f"no request {request_id!r} in flight", field="request_id")
        self.scheduler.abort(seq)
        seq.finish_reason = "abort"
        return self._delta(seq, [], None, final=True)

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    # ---- the step -------------------------------------------------------------------------

    def step(self) -> list[Delta]:
        """Schedule, run the model once, sample, and report what each request gained."""
        step = self.scheduler.schedule()
        deltas = [self._end(seq, [], None) for seq in step.finished]
        if not step.chunks:
            return deltas
        self._steps += 1
        logits = self.runner.forward(step.chunks)
        sampled = [c for c in step.chunks if c.sample]
        if not sampled:  # every chunk was a partial prefill
            return deltas
        result = self.sampler.sample(logits, [self._sampling_row(c) for c in sampled])
        for i, (chunk, token) in enumerate(zip(sampled, result.token_ids, strict=True)):
            logprob = result.logprobs[i] if result.logprobs is not None else None
            deltas.append(self._append_token(chunk.seq, token, logprob))
        return deltas

    def _sampling_row(self, chunk: Chunk) -> SamplingRow:
        seq = chunk.seq
        return SamplingRow(seq.params, seq.num_output, seq.prompt_ids,
                           seq.output_ids if seq.params.has_penalties else (), seq.constraint)

    def _append_token(self, seq: Sequence, token: int, logprob: float | None) -> Delta:
        seq.token_ids.append(token)
        self._generated += 1
        params = seq.params
        if logprob is not None and params.logprobs:
            seq.logprobs.append(logprob)
        if seq.constraint is not None:
            seq.constraint.advance(token)
        if token in params.stop_token_ids:
            seq.finish_reason, seq.stop_reason = "stop", token
        elif token in self.eos_token_ids and not params.ignore_eos:
            seq.finish_reason = "stop"
        else:
            hit = seq.detok.push(token) if seq.detok is not None else None
            if hit is not None:
                seq.finish_reason, seq.stop_reason = "stop", hit
            elif seq.constraint is not None and seq.constraint.is_terminated():
                seq.finish_reason = "stop"
            elif seq.num_output >= params.max_new_tokens or len(seq.token_ids) >= self.max_model_len:
                seq.finish_reason = "length"
        lp = [logprob] if logprob is not None and params.logprobs else None
        if seq.finish_reason is None:
            return self._delta(seq, [token], lp, final=False)
        self.scheduler.finish(seq)
        return self._end(seq, [token], lp)

    def _end(self, seq: Sequence, tokens: list[int], logprobs: list[float] | None) -> Delta:
        self._seqs.pop(seq.request_id, None)
        if seq.detok is not None and seq.stop_reason is None:
            seq.detok.finish()
        return self._delta(seq, tokens, logprobs, final=True)

    def _delta(self, seq: Sequence, tokens: list[int], logprobs: list[float] | None, *, final: bool) -> Delta:
        text = seq.detok.release(final=final) if seq.detok is not None else ""
        return Delta(seq.request_id, tokens, text, logprobs,
                     finish_reason=seq.finish_reason if final else None, stop_reason=seq.stop_reason,
                     prompt_tokens=seq.num_prompt, cached_tokens=max(seq.cached_tokens, 0),
                     completion_tokens=seq.num_output)

    # ---- conveniences ---------------------------------------------------------------------

    def generate(self, prompts: str | list[int] | Seq[str | list[int]] | Seq[Request],
                 params: SamplingParams | Seq[SamplingParams] | None = None) -> list[Output]:
        """Run prompts (strings, token-id lists or ``Request`` objects) to completion together."""
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        items = list(prompts)  # type: ignore[arg-type]
        if params is None or isinstance(params, SamplingParams):
            params_list = [params or SamplingParams()] * len(items)
        else:
            params_list = list(params)
            if len(params_list) != len(items):
                raise InvalidRequestError(f"{len(params_list)} SamplingParams for {len(items)} prompts",
                                          field="params")
        requests = [p if isinstance(p, Request) else Request(prompt=p, params=sp)
                    for p, sp in zip(items, params_list, strict=True)]
        seqs = [self.prepare(r) for r in requests]  # validate all before queueing any
        for seq in seqs:
            self.add_request(seq)
        while any(not s.finished for s in seqs):
            self.step()
        return [self.output(s) for s in seqs]

    @staticmethod
    def output(seq: Sequence) -> Output:
        return Output(seq.request_id, seq.output_ids, seq.detok.text if seq.detok is not None else "",
                      seq.finish_reason, seq.stop_reason, seq.num_prompt, max(seq.cached_tokens, 0),
                      list(seq.logprobs) if seq.params.logprobs else None)

    def score(self, token_ids: list[int]) -> torch.Tensor:
        """float32 logits [len(token_ids), vocab] for every position, computed in one pass on
        scratch KV slots (the prefix cache is neither read nor written)."""
        seq = self.prepare(Request(prompt=list(token_ids), params=SamplingParams(max_new_tokens=1)))
        n = len(seq.token_ids)
        if not self.scheduler.make_room(n):
            raise InvalidRequestError(f"needs {n} free KV slots, {self.allocator.num_free} available "
                                      "while other requests run", field="token_ids")
        seq.slots = self.allocator.alloc(n)
        try:
            logits = self.runner.forward([Chunk(seq, 0, n, True)], all_logits=True)
            return logits.clone()  # an ordinary tensor, not an inference-mode one
        finally:
            self.allocator.free(seq.slots)

    # ---- sessions and stats ---------------------------------------------------------------

    def open_session(self, session_id: str, ttl: float | None = None) -> None:
        """Declare a session (optional: any request may name one); ``ttl`` overrides the default."""
        self.scheduler.open_session(session_id, ttl)

    def close_session(self, session_id: str) -> None:
        """Release the session's pinned K/V now (it stays cached, evictable)."""
        self.scheduler.close_session(session_id)

    def stats(self) -> EngineStats:
        cache = self.cache
        s = self.scheduler
        free = self.allocator.num_free
        return EngineStats(
            running=len(s.running), waiting=len(s.waiting),
            kv_used=self.allocator.num_slots - free, kv_total=self.allocator.num_slots, kv_free=free,
            cached_tokens=cache.total_size if cache else 0,
            evictable_tokens=cache.evictable_size if cache else 0,
            pinned_tokens=cache.pinned_size if cache else 0,
            cached_hit_tokens=s.stats.cached_hit_tokens, prompt_tokens=s.stats.prompt_tokens,
            generated_tokens=self._generated, retractions=s.stats.retractions,
            chunked_prefills=s.stats.chunked_prefills, steps=self._steps,
        )

    def sequence(self, request_id: str) -> Sequence:
        try:
            return self._seqs[request_id]
        except KeyError:
            raise RequestNotFoundError(f"no request {request_id!r} in flight", field="request_id") from None

    def in_flight(self) -> list[str]:
        return [rid for rid, s in self._seqs.items() if s.status is not Status.FINISHED]
