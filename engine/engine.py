"""``Engine``: the synchronous step loop.

One request's path: ``add_request`` (tokenize, validate) → scheduler queue → admission (prefix
match, KV budget) → prefill in chunks → decode steps in the continuous batch → sampling → text
(incremental detokenization, stop strings) → ``Delta`` per step → ``Output`` at the end.

Constrained requests add two things (``Engine.step`` lists the order of operations):

- Mask fill overlapped with the forward pass: the grammar masks of a step's sampling rows are
  filled on worker threads (``Sampler.begin_masks``) while ``ModelRunner.forward`` runs, and applied
  when sampling (torch on CPU, a Triton kernel on CUDA).
- Fast-forward: when the grammar forces the next text (a JSON schema's keys), its tokens are
  appended right after the sampled token, as output tokens (they count toward ``max_new_tokens``,
  stop strings and the streamed text exactly like sampled ones), and the next step computes their
  K/V as one multi-token chunk (the scheduler's prefill path) and samples at its end. llguidance
  forces only tokens its mask would allow alone, so the output is token for token the same as
  without fast-forward, in fewer steps. ``EngineConfig.fast_forward`` turns it off.

``AsyncEngine`` (``engine/async_engine.py``) runs this loop on a background thread.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from engine.config import EngineConfig
from engine.constrained.compiler import compile_constraint, llg_tokenizer
from engine.constrained.spec import ConstraintSpec
from engine.demo import resolve_model_path
from engine.errors import EngineError, InvalidRequestError, RequestNotFoundError
from engine.kv_cache import KVLayout, KVPool, SlotAllocator, size_kv_pool
from engine.model.loader import load_model
from engine.radix_cache import RadixCache
from engine.request import Delta, Output, Request
from engine.runner import ModelRunner
from engine.sampling import (
    ForcingConstraint,
    PendingMasks,
    Sampler,
    SamplingParams,
    SamplingRow,
    TokenConstraint,
)
from engine.scheduler import Chunk, Scheduler
from engine.sequence import Sequence, Status
from engine.stats import EngineStats
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


PLACEHOLDER = -1
"""Stands in ``token_ids`` for a token sampled on the GPU and not read back yet (run ahead)."""


@dataclass
class _Ahead:
    """A step whose sampled tokens are still on the device."""

    chunks: list[Chunk]
    tokens: torch.Tensor
    """long [n] on the device, in chunk order."""
    host: torch.Tensor
    """The same, copied to (pinned) host memory once ``ready`` fires."""
    ready: torch.cuda.Event | None


class Engine:
    def __init__(self, model: str = "demo", *, device: str = "cpu", dtype: str | None = None,
                 max_kv_tokens: int | None = None, chunk_size: int | None = None, seed: int = 0,
                 **options: object) -> None:
        """Load ``model`` (a HF checkpoint directory or ``demo``). Further keyword options are the
        fields of ``EngineConfig``."""
        self.config = EngineConfig(model=model, device=device, dtype=dtype, max_kv_tokens=max_kv_tokens,
                                   chunk_size=chunk_size, seed=seed, **options)  # type: ignore[arg-type]
        cfg = self.config
        self.device = _device(cfg.device)
        path = resolve_model_path(cfg.model)
        self.model = load_model(path, device=self.device, dtype=cfg.dtype, load_format=cfg.load_format)
        self.model.fused_gemv = cfg.fused_gemv
        mcfg = self.model.config
        tok_path = resolve_model_path(cfg.tokenizer) if cfg.tokenizer else path
        self.tokenizer = Tokenizer(tok_path) if Tokenizer.find(tok_path) else None
        if self.tokenizer is not None:
            _warm_constraints(self.tokenizer)
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
        self.scheduler = Scheduler(cfg.scheduler_config(), self.allocator, self.cache, self.max_model_len)
        self.runner = ModelRunner(self.model, self.kv, self.device, max_sequences=cfg.max_running,
                                  max_context=self.max_model_len, cuda_graphs=cfg.cuda_graphs,
                                  cuda_graph_max_batch=cfg.cuda_graph_max_batch,
                                  record_timeline=cfg.record_gpu_timeline,
                                  prefill_attention=cfg.prefill_attention)
        vocab_limit = self.tokenizer.vocab_size if self.tokenizer else None
        self.logit_width = mcfg.vocab_size
        """Logit rows of the model (grammar masks are this wide; may exceed the tokenizer's vocabulary)."""
        self.sampler = Sampler(seed=cfg.seed, vocab_limit=vocab_limit, mask_threads=cfg.mask_threads,
                               pin_memory=self.device.type == "cuda")
        self.overlap = cfg.overlap if cfg.overlap is not None else self.device.type == "cuda"
        self._ahead: _Ahead | None = None
        """A decode step whose tokens are still on the device (``overlap``: see ``step``)."""
        self._untexted: list[Sequence] = []
        """Running requests whose newest tokens await their text (``overlap``)."""
        self._seqs: dict[str, Sequence] = {}
        self._fresh: list[Sequence] = []
        """Added since the last step and fast-forwarded: the grammar may force their first tokens."""
        self._steps = 0
        self._generated = 0
        self._forced = 0

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
                       constraint=constraint, arrival=time.monotonic(), spec=request.constraint)
        # Fast-forward computes no logits at forced positions: requests that want logprobs decode them one by one.
        seq.fast_forward = (bool(self.config.fast_forward) and not params.logprobs
                            and isinstance(constraint, ForcingConstraint))
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
        if seq.fast_forward:
            self._fresh.append(seq)
        return seq.request_id

    def abort(self, request_id: str) -> Delta:
        """Stop a request now and free what it holds. Returns its final delta."""
        seq = self._seqs.pop(request_id, None)
        if seq is None:
            raise RequestNotFoundError(f"no request {request_id!r} in flight", field="request_id")
        self.scheduler.abort(seq)
        self.runner.release(seq)
        self._text(seq)
        seq.finish_reason = "abort"
        return self._delta(seq, final=True)

    def recover(self) -> list[Delta]:
        """After ``step`` raised: abort every request in flight and drop the step's unfinished state
        (a run-ahead step, pending text), so the engine takes new requests again. Returns the aborted
        requests' final deltas. The failure cannot be pinned on one request, so all of them end."""
        self._ahead = None
        self._fresh.clear()
        self._untexted.clear()
        deltas = []
        for request_id, seq in list(self._seqs.items()):
            while seq.token_ids and seq.token_ids[-1] == PLACEHOLDER:  # a run-ahead token never read back
                seq.token_ids.pop()
            if seq.num_computed > len(seq.token_ids):  # the placeholder's position was counted, its slot taken
                self.scheduler.allocator.free(seq.slots[len(seq.token_ids):])
                del seq.slots[len(seq.token_ids):]
                seq.num_computed = len(seq.token_ids)
            try:
                deltas.append(self.abort(request_id))
            except Exception:  # keep going: the others must still be freed
                log.exception("engine recovery: could not abort request %s", request_id)
                self._seqs.pop(request_id, None)
        return deltas

    def has_work(self) -> bool:
        return self.scheduler.has_work() or bool(self._untexted) or self._ahead is not None

    # ---- the step -------------------------------------------------------------------------

    def step(self) -> list[Delta]:
        """Run one step and report what each request gained. The order of operations:

        1. Fast-forward requests added since the last step: text their grammar forces at the very
           start joins their prompt's prefill (a request may even end here, without a forward).
        2. Schedule: decode chunks (one token), prefill chunks, and multi-token chunks of a sampled
           token followed by forced tokens; all of them compute K/V this step.
        3. Start filling the grammar masks of the rows that sample, on the mask worker threads.
        4. Run the forward pass; the masks fill meanwhile (both release the GIL).
        5. Sample: wait for the masks, apply them, then penalties and the draw.
        6. Per sampled token: append it, advance the grammar, detokenize, check EOS / stop strings /
           ``max_new_tokens`` / grammar end; then append the tokens the grammar now forces, each
           checked the same way (a stop inside them cuts there). They are computed next step.
        7. A ``Delta`` per request that gained tokens or ended.

        With ``overlap`` a step of one-token decodes whose rows the device can sample alone (no
        logprobs, no penalties, no fast-forward) *runs ahead*: its tokens stay on the device, and
        the next call launches the following step on them (scheduled with a placeholder for each
        unknown token) before reading them back, so steps 5-7 of step N run on the CPU while the
        GPU computes step N + 1. Grammar rows run ahead too: their tokens are read back and their
        next masks filled while that forward runs, then the step samples. A request that ends on
        step N's token has had step N + 1 computed for nothing; its K/V (that of its last token) is
        complete, and the extra token is dropped.
        """
        if self._ahead is not None:
            if self._can_continue(self._ahead):
                return self._step_ahead(self._ahead)
            ahead, self._ahead = self._ahead, None
            return self._settle(ahead) + self._step()
        return self._step()

    def _step(self) -> list[Delta]:
        deltas = self._fast_forward_fresh() if self._fresh else []
        step = self.scheduler.schedule()
        for seq in step.retracted:
            self.runner.release(seq)
        deltas += [self._end(seq) for seq in step.finished]
        if not step.chunks:
            return deltas + self._catch_up_text()
        self._steps += 1
        sampled = [c for c in step.chunks if c.sample]
        rows = [self._sampling_row(c) for c in sampled]
        masks = self.sampler.begin_masks(rows, self.logit_width)
        try:
            logits = self.runner.forward(step.chunks)
        except BaseException:
            if masks is not None:  # let the workers finish with the mask buffer before anyone reuses it
                with contextlib.suppress(Exception):
                    masks.wait()
            raise
        deltas += self._catch_up_text()  # the forward is queued on the GPU: this CPU work overlaps it
        if not sampled:  # every chunk was a partial prefill
            return deltas
        if self._may_run_ahead(step.chunks, rows):
            self._ahead = self._sample_ahead(step.chunks, logits, rows, masks)
            return deltas
        result = self.sampler.sample(logits, rows, masks)
        for i, (chunk, token) in enumerate(zip(sampled, result.token_ids, strict=True)):
            logprob = result.logprobs[i] if result.logprobs is not None else None
            delta = self._postprocess(chunk.seq, token, logprob)
            if delta is not None:
                deltas.append(delta)
        return deltas

    # ---- running ahead (overlap) ----------------------------------------------------------

    def _may_run_ahead(self, chunks: list[Chunk], rows: list[SamplingRow]) -> bool:
        # Fast-forward appends forced tokens after a token is read back: the step launched ahead
        # would have sampled the wrong position.
        return (self.overlap and len(rows) == len(chunks)
                and all(c.length == 1 and not c.seq.fast_forward for c in chunks)
                and all(Sampler.device_sampleable(r) for r in rows))

    def _can_continue(self, ahead: _Ahead) -> bool:
        """The next step would be exactly one more decode of the same requests, with room for it."""
        s = self.scheduler
        seqs = [c.seq for c in ahead.chunks]
        return (not self._fresh and not s.waiting and len(s.running) == len(seqs)
                and all(a is b for a, b in zip(s.running, seqs, strict=True))
                and s.make_room(len(seqs)))

    def _sample_ahead(self, chunks: list[Chunk], logits: torch.Tensor, rows: list[SamplingRow],
                      masks: PendingMasks | None) -> _Ahead:
        tokens = self.sampler.sample_on_device(logits, rows, masks)
        if tokens.device.type != "cuda":
            return _Ahead(chunks, tokens, tokens, None)
        host = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True)
        host.copy_(tokens, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
        return _Ahead(chunks, tokens, host, ready)

    def _step_ahead(self, ahead: _Ahead) -> list[Delta]:
        """Launch the next decode of ``ahead``'s requests on its device-side tokens, then read
        those tokens back and process them while the GPU computes."""
        for c in ahead.chunks:
            c.seq.token_ids.append(PLACEHOLDER)  # the scheduler counts it; the GPU supplies it
        step = self.scheduler.schedule()
        if step.retracted or step.finished or len(step.chunks) != len(ahead.chunks):
            raise EngineError("run-ahead step changed shape: the scheduler did not decode the same batch")
        self._steps += 1
        logits = self.runner.forward(step.chunks, input_ids=ahead.tokens)
        if all(c.seq.constraint is None for c in step.chunks):
            rows = [self._sampling_row(c) for c in step.chunks]
            self._ahead = self._sample_ahead(step.chunks, logits, rows, None)
            deltas = self._catch_up_text() + self._settle(ahead)
        else:
            # A grammar's next mask needs the token read back: take it (advancing the grammar) and
            # fill the masks while the GPU runs the forward, then sample. A request that ended on
            # that token samples unconstrained; its token is dropped.
            deltas = self._catch_up_text() + self._settle(ahead)
            rows = [self._sampling_row(c, live=not c.seq.finished) for c in step.chunks]
            masks = self.sampler.begin_masks(rows, self.logit_width)
            self._ahead = self._sample_ahead(step.chunks, logits, rows, masks)
        if all(c.seq.finished for c in self._ahead.chunks):  # every request ended on the tokens just read
            self._ahead = None
        return deltas

    def _settle(self, ahead: _Ahead) -> list[Delta]:
        """Read back a run-ahead step's tokens (waits for that step only) and take them."""
        if ahead.ready is not None:
            ahead.ready.synchronize()
        deltas = []
        for chunk, token in zip(ahead.chunks, ahead.host.tolist(), strict=True):
            seq = chunk.seq
            if seq.finished:  # aborted after its step was launched
                continue
            if seq.token_ids[-1] == PLACEHOLDER:  # a later step is already computing this token
                seq.token_ids.pop()
            delta = self._postprocess(seq, token, None)
            if delta is not None:
                deltas.append(delta)
        # The GPU is busy with the next step (or idle with nothing to do): make the text now.
        return deltas + self._catch_up_text()

    def _catch_up_text(self) -> list[Delta]:
        """Detokenize the tokens the last step appended without text, and report them."""
        if not self._untexted:
            return []
        untexted, self._untexted = self._untexted, []
        deltas = []
        for seq in untexted:
            if seq.request_id in self._seqs and not seq.finished:  # not aborted meanwhile
                self._text(seq)
                deltas.append(self._delta(seq, final=False))
        return deltas

    @staticmethod
    def _text(seq: Sequence) -> None:
        if seq.untexted:
            for token in seq.untexted:
                seq.detok.push(token)  # no stop strings (else nothing is deferred): no hit to act on
            seq.untexted.clear()

    def _sampling_row(self, chunk: Chunk, *, live: bool = True) -> SamplingRow:
        seq = chunk.seq
        return SamplingRow(seq.params, seq.num_output, seq.prompt_ids,
                           seq.output_ids if seq.params.has_penalties else (), seq.constraint if live else None)

    def _postprocess(self, seq: Sequence, token: int, logprob: float | None) -> Delta | None:
        """Take the sampled ``token``, then the tokens the grammar forces after it. None when the
        delta waits for its text (``overlap``): the next step reports it."""
        if logprob is not None and seq.params.logprobs:
            seq.logprobs.append(logprob)
        done = self._push(seq, token) or (seq.fast_forward and self._fast_forward(seq))
        if not done:
            if seq.untexted:
                self._untexted.append(seq)
                return None
            return self._delta(seq, final=False)
        self.scheduler.finish(seq)
        return self._end(seq)

    def _fast_forward_fresh(self) -> list[Delta]:
        """Forced text at the very start (``{"destination": "`` of a schema) is appended before the
        request is admitted, so its prefill computes it with the prompt. Returns the requests it ended."""
        fresh, self._fresh = self._fresh, []
        ended = []
        for seq in fresh:
            if seq.status is Status.WAITING and seq.num_output == 0 and self._fast_forward(seq):
                self.scheduler.finish(seq)  # it never ran: only leaves the queue
                ended.append(self._end(seq))
        return ended

    def _fast_forward(self, seq: Sequence) -> bool:
        """Append the tokens ``seq``'s grammar forces now. True when the request ends among them."""
        for token in seq.constraint.forced_tokens():
            self._forced += 1
            if self._push(seq, token):
                return True
        return False

    def _push(self, seq: Sequence, token: int) -> bool:
        """Append one output token (sampled or forced), advance the grammar and the text, and
        decide whether the request ends with it (sets ``finish_reason``). True when it does."""
        seq.token_ids.append(token)
        self._generated += 1
        params = seq.params
        if seq.constraint is not None:
            seq.constraint.advance(token)
            if getattr(seq.constraint, "error", None) is not None:  # it failed: end this request alone
                seq.finish_reason = "error"
                return True
        if token in params.stop_token_ids:
            seq.finish_reason, seq.stop_reason = "stop", token
        elif token in self.eos_token_ids and not params.ignore_eos:
            seq.finish_reason = "stop"
        else:
            hit = None
            if seq.detok is not None:
                if self.overlap and not params.stop:  # text cannot end this request: make it later
                    seq.untexted.append(token)
                else:
                    hit = seq.detok.push(token)
            if hit is not None:
                seq.finish_reason, seq.stop_reason = "stop", hit
            elif seq.constraint is not None and seq.constraint.is_terminated():
                seq.finish_reason = "stop"
            elif seq.num_output >= params.max_new_tokens or len(seq.token_ids) >= self.max_model_len:
                seq.finish_reason = "length"
        return seq.finish_reason is not None

    def _end(self, seq: Sequence) -> Delta:
        self._seqs.pop(seq.request_id, None)
        self.runner.release(seq)
        self._text(seq)
        if seq.detok is not None and seq.stop_reason is None:
            seq.detok.finish()
        return self._delta(seq, final=True)

    def _delta(self, seq: Sequence, *, final: bool) -> Delta:
        """The output tokens (and text) not reported yet: the sampled token and those forced after it."""
        known = seq.num_output - (seq.token_ids[-1] == PLACEHOLDER)  # a run-ahead token is not known yet
        start, seq.num_reported = seq.num_reported, known
        tokens = seq.token_ids[seq.num_prompt + start: seq.num_prompt + known]
        logprobs = seq.logprobs[start:] if seq.params.logprobs and tokens else None
        text = seq.detok.release(final=final) if seq.detok is not None else ""
        return Delta(seq.request_id, tokens, text, logprobs,
                     finish_reason=seq.finish_reason if final else None, stop_reason=seq.stop_reason,
                     prompt_tokens=seq.num_prompt, cached_tokens=max(seq.cached_tokens, 0),
                     completion_tokens=known, error=seq.error if final else None)

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

    def output(self, seq: Sequence) -> Output:
        """The finished ``seq`` as an ``Output``, with its structured result (see ``structured``)."""
        text = seq.detok.text if seq.detok is not None else ""
        return self.structured(Output(seq.request_id, seq.output_ids, text, seq.finish_reason, seq.stop_reason,
                                      seq.num_prompt, max(seq.cached_tokens, 0),
                                      list(seq.logprobs) if seq.params.logprobs else None, error=seq.error),
                               seq.spec)

    def structured(self, output: Output, spec: object) -> Output:
        """Fill ``output``'s ``json`` or ``content`` and ``tool_calls`` when ``spec`` (the request's
        ``constraint``) is a JSON schema or tool calls; parsed and checked with jsonschema once more,
        ``ConstraintViolationError`` if that fails (an engine bug). Thread-safe."""
        if not isinstance(spec, ConstraintSpec) or (spec.json_schema is None and spec.tool_calls is None):
            return output
        from engine.constrained.result import structure
        from engine.constrained.toolcall import tool_call_text

        tok = self._require_tokenizer("constraint")
        template = getattr(tok.hf, "chat_template", None)
        # Tool-call tags may be special tokens, which the text skips: decode with them kept.
        text = tool_call_text(tok, output.token_ids) if spec.tool_calls is not None else output.text
        result = structure(spec, text, output.finish_reason, output.stop_reason,
                           chat_template=template if isinstance(template, str) else None)
        output.content, output.tool_calls = result.content, result.tool_calls
        output.json = result.json
        return output

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
            self.runner.release(seq)
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
            chunked_prefills=s.stats.chunked_prefills, steps=self._steps, forced_tokens=self._forced,
        )

    def gpu_idle_gaps(self) -> list[float]:
        """Seconds the GPU sat idle between consecutive forward passes since the last call (needs
        ``record_gpu_timeline=True`` on CUDA; empty otherwise). Synchronises the device."""
        gaps = self.runner.gpu_idle_gaps()
        if self.runner.timeline is not None:
            self.runner.timeline.events.clear()
        return gaps

    def sequence(self, request_id: str) -> Sequence:
        try:
            return self._seqs[request_id]
        except KeyError:
            raise RequestNotFoundError(f"no request {request_id!r} in flight", field="request_id") from None

    def in_flight(self) -> list[str]:
        return [rid for rid, s in self._seqs.items() if s.status is not Status.FINISHED]


def _warm_constraints(tokenizer: Tokenizer) -> None:
    """Build llguidance's view of the vocabulary while the engine loads, not on the first
    constrained request: about a second for Qwen2.5, holding the GIL, which would stall the running
    batch and every other thread then. Built once per tokenizer per process."""
    try:
        llg_tokenizer(tokenizer)
    except EngineError as e:  # a slow (Python) tokenizer: constrained requests will say so themselves
        log.debug("constrained decoding unavailable: %s", e)
