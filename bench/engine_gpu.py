"""The engine on a GPU: 8B-class shapes against HF transformers and the memory roofline, in one run.

    python -m bench.engine_gpu                        # on a CUDA machine
    python -m bench.engine_gpu --smoke                # tiny shapes on CPU: checks the script end to end
    python -m bench.engine_gpu --models qwen2.5-7b --sections agent,constrained --json out.json

Models: Llama-3-8B- and Qwen2.5-7B-shaped, bf16, random weights (``load_format="dummy"``: only a config.json is
written; the Qwen shape gets the Qwen2.5 tokenizer). Sections: ``copy`` (device-to-device copy bandwidth),
``decode`` (batches 1-128, CUDA graphs on and off, GPU idle time between steps, % of the roofline), ``hf``
(transformers ``generate``, eager, sdpa), ``prefill``, ``agent`` (64 sessions x 4 turns with tools: TTFT and
prefix-cache hits per turn) and ``constrained`` (JSON schema vs unconstrained at batch 64). The tables are printed
at the end; bench/README.md says what each number means.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from engine import Engine, Request, SamplingParams
from engine.constrained.spec import ConstraintSpec
from engine.demo import ASSETS, GENERATION_CONFIG, TOKENIZER_FILES

log = logging.getLogger("bench.engine_gpu")
SECTIONS = ("copy", "decode", "hf", "prefill", "agent", "constrained")
LLAMA3_8B: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "hidden_act": "silu", "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "tie_word_embeddings": False, "bos_token_id": 128000, "eos_token_id": 128001, "torch_dtype": "bfloat16"}
QWEN25_7B: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584,
    "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
    "hidden_act": "silu", "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "tie_word_embeddings": False, "use_sliding_window": False, "sliding_window": 131072, "max_window_layers": 28,
    "bos_token_id": 151643, "eos_token_id": 151645, "torch_dtype": "bfloat16"}
MODELS = {"llama3-8b": LLAMA3_8B, "qwen2.5-7b": QWEN25_7B}
AGENT_MODEL = "qwen2.5-7b"
"""The agent and constrained sections need a tokenizer (chat template, grammar): only the Qwen shape has one."""
SMOKE_SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
               "intermediate_size": 128}
DECODE_TARGETS = {1: 170.0, 64: 8000.0}
"""The issue's decode targets in tok/s (H100, CUDA graphs on); its other targets are ratios."""


@dataclass
class Plan:
    """Every size the run uses: the full run on CUDA, or ``--smoke`` on CPU."""

    device: str = "cuda"
    dtype: str = "bfloat16"
    batches: list[int] = field(default_factory=lambda: [1, 16, 64, 128])
    eager_batches: list[int] = field(default_factory=lambda: [1, 64])  # decode again with cuda_graphs=False
    hf_batches: list[int] = field(default_factory=lambda: [1, 16, 64])
    prompt_len: int = 256
    new_tokens: int = 128
    prefill_prompts: int = 8
    prefill_len: int = 2048
    prefill_chunk: int = 2048  # chunk_size of the second prefill measurement (the first uses the default: 8192 on CUDA)
    sessions: int = 64
    turns: int = 4
    agent_new_tokens: int = 32
    constrained_batch: int = 64
    constrained_new_tokens: int = 128
    copy_bytes: int = 1 << 30
    copy_iters: int = 20
    kv_gib: float = 16.0  # KV pool per engine
    mask_threads: int | None = None  # grammar-mask workers (None: the engine's default)
    smoke: bool = False


SMOKE_PLAN = Plan(device="cpu", dtype="float32", batches=[1, 4], eager_batches=[1, 4], hf_batches=[1, 4],
                  prompt_len=32, new_tokens=8, prefill_prompts=2, prefill_len=128, sessions=4, turns=2,
                  agent_new_tokens=8, constrained_batch=4, constrained_new_tokens=96, copy_bytes=64 << 20,
                  copy_iters=5, kv_gib=0.25, smoke=True)

# ---- the agent workload: a shared system prompt and four tools (about 1,000 tokens with the chat template) -----

SYSTEM_PROMPT = (
    "You are Atlas, the operations assistant of a travel agency. You help customers plan, book and change trips. "
    "Always check availability and prices with the tools before you quote them; never invent flight numbers, "
    "hotel names or prices. Quote prices in EUR, taxes included. "
    "Confirm every booking back to the customer with its reference number, dates and total price, and mention the "
    "cancellation policy. Keep answers under 120 words unless the customer asks for detail. Do not share other "
    "customers' data. If a tool fails, say so and suggest an alternative."
)


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required}}}


def _s(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


TOOLS = [
    _tool("search_flights", "Search scheduled flights between two airports on a date, cheapest first.", {
        "origin": _s("IATA code of the departure airport, e.g. LHR"),
        "destination": _s("IATA code of the arrival airport, e.g. JFK"),
        "date": _s("Departure date, YYYY-MM-DD", format="date"), "passengers": {"type": "integer", "minimum": 1},
        "cabin": _s("Cabin class", enum=["economy", "premium_economy", "business", "first"]),
    }, ["origin", "destination", "date"]),
    _tool("search_hotels", "Find hotels in a city with rooms free for the whole stay, with nightly prices.", {
        "city": _s("City name, e.g. Lisbon"), "check_in": _s("Check-in date, YYYY-MM-DD", format="date"),
        "check_out": _s("Check-out date, YYYY-MM-DD", format="date"), "guests": {"type": "integer", "minimum": 1},
        "max_price": {"type": "number", "description": "Highest nightly price in the customer's currency"},
        "amenities": {"type": "array", "description": "Amenities the hotel must have", "items": _s(
            "An amenity", enum=["wifi", "pool", "gym", "parking", "breakfast", "pets"])},
    }, ["city", "check_in", "check_out"]),
    _tool("book", "Book a flight or hotel offer returned by a search, for the named travellers.", {
        "offer_id": _s("The offer id from search_flights or search_hotels"),
        "travellers": {"type": "array", "description": "Everyone travelling, as on their passports", "items": {
            "type": "object", "required": ["first_name", "last_name"], "properties": {
                "first_name": _s("Given name"), "last_name": _s("Family name"),
                "birth_date": _s("YYYY-MM-DD", format="date")}}},
        "payment_method": _s("Stored payment method to charge", enum=["card_on_file", "invoice", "voucher"]),
    }, ["offer_id", "travellers"]),
    _tool("get_booking", "Look up an existing booking by its reference: status, itinerary, price, policy.",
          {"reference": _s("Six-character booking reference, e.g. K7Q2ZD", pattern="^[A-Z0-9]{6}$")},
          ["reference"]),
]
CITIES = ["Lisbon", "Osaka", "Toronto", "Nairobi", "Oslo", "Lima", "Hanoi", "Seville", "Denver", "Krakow", "Cairo",
          "Perth", "Bogota", "Zurich", "Manila", "Dublin"]


def user_message(session: int) -> str:
    city, date = CITIES[session % len(CITIES)], f"2026-0{1 + session % 9}-{10 + session % 18}"
    return (f"Hi, this is customer #{1000 + session}. My partner and I want to fly to {city} on {date} for "
            f"{3 + session % 5} nights, economy, and need a hotel with wifi and breakfast under "
            f"{90 + 5 * (session % 12)} EUR a night. What are the options?")


def tool_result(session: int, turn: int) -> str:
    """About 100 tokens of JSON, different per session and turn."""
    offers = [{"offer_id": f"OF{session:03d}{turn}{k}", "carrier": "TAP" if k else "Lufthansa",
               "depart": f"0{6 + k}:15", "stops": k, "price_eur": 180 + 37 * k + session} for k in range(2)]
    return json.dumps({"status": "ok", "turn": turn, "results": offers, "note": "prices include taxes"})


CONSTRAINED_SCHEMA = {"type": "object", "additionalProperties": False, "properties": {
    "name": {"type": "string", "maxLength": 40}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "email": {"type": "string", "maxLength": 60}, "role": {"enum": ["admin", "editor", "viewer", "guest"]},
    "score": {"type": "number", "minimum": 0, "maximum": 100},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 4},
}, "required": ["name", "age", "email", "role", "score", "tags"]}

def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sync(plan: Plan) -> None:
    if plan.device == "cuda":
        torch.cuda.synchronize()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def random_prompts(n: int, length: int, vocab_size: int, seed: int) -> list[list[int]]:
    """Ids of ordinary tokens (Qwen2.5's special tokens start at 151643)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, min(vocab_size, 151643), (n, length), generator=g).tolist()


def write_model_dir(root: Path, name: str, plan: Plan) -> Path:
    cfg = {**MODELS[name], **(SMOKE_SHAPE if plan.smoke else {})}
    if plan.smoke and name == "llama3-8b":
        cfg["vocab_size"] = 1024  # the Qwen shape keeps its vocabulary: its tokenizer needs it
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    if name == AGENT_MODEL:
        for file in TOKENIZER_FILES:
            shutil.copyfile(ASSETS / file, path / file)
        (path / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG) + "\n")
    return path


def make_engine(path: Path, plan: Plan, **options: Any) -> Engine:
    """An engine with a KV pool of ``plan.kv_gib``, recording the GPU timeline."""
    cfg = json.loads((path / "config.json").read_text())
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    kv_bytes = 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * (4 if plan.smoke else 2)
    if plan.mask_threads is not None:
        options = {"mask_threads": plan.mask_threads, **options}
    return Engine(str(path), device=plan.device, dtype=plan.dtype, load_format="dummy", max_running=256,
                  max_kv_tokens=int(plan.kv_gib * (1 << 30) / kv_bytes), record_gpu_timeline=True, **options)


def evict_cache(engine: Engine) -> None:
    if engine.cache is not None:
        engine.cache.evict(engine.cache.total_size)


@dataclass
class Run:
    """One batch of requests driven step by step through ``Engine.step``; times in seconds from the submit."""

    wall: float = 0.0  # to the last token
    to_first: float = 0.0  # until every request has its first token (prefill done)
    decode: float = 0.0  # from then to the last token
    tokens: int = 0
    decode_tokens: int = 0  # generated in the decode phase
    decode_steps: int = 0
    full: float = float("nan")  # from then until the step in which the first request ended: every request decoding
    full_tokens: int = 0
    full_steps: int = 0
    gaps: list[float] = field(default_factory=list)  # GPU idle between the decode phase's forward passes
    ttft: dict[str, float] = field(default_factory=dict)
    finals: dict[str, Any] = field(default_factory=dict)  # request id -> its last Delta
    texts: dict[str, str] = field(default_factory=dict)
    prepare_s: float = 0.0  # Engine.prepare (tokenize, compile constraints), before the submit


def drive(engine: Engine, requests: list[Request]) -> Run:
    """Prepare all requests (tokenize, compile constraints), submit them at once and step to the end."""
    run = Run()
    began = time.perf_counter()
    seqs = [engine.prepare(r) for r in requests]
    run.prepare_s = time.perf_counter() - began
    counts, run.texts = {s.request_id: 0 for s in seqs}, {s.request_id: "" for s in seqs}
    t0 = now = time.perf_counter()
    for seq in seqs:
        engine.add_request(seq)
    t_first, steps0, tokens0 = None, 0, 0
    while len(run.finals) < len(seqs):
        ended = len(run.finals)
        if not engine.has_work():
            raise RuntimeError(f"engine idle with {len(seqs) - len(run.finals)} requests unfinished")
        deltas = engine.step()
        now = time.perf_counter()
        for d in deltas:
            if d.token_ids and d.request_id not in run.ttft:
                run.ttft[d.request_id] = now - t0
            counts[d.request_id] += len(d.token_ids)
            run.texts[d.request_id] += d.text
            if d.finished:
                run.finals[d.request_id] = d
        if t_first is not None and ended == 0 and run.finals:  # the last step every request decoded in
            run.full, run.full_steps = now - t_first, engine.stats().steps - steps0
            run.full_tokens = sum(counts.values()) - tokens0
        if t_first is None and len(run.ttft) == len(seqs):
            engine.gpu_idle_gaps()  # synchronises, and forgets the prefill steps: gaps of the decode phase only
            t_first = time.perf_counter()
            steps0, tokens0 = engine.stats().steps, sum(counts.values())
    run.gaps = engine.gpu_idle_gaps()
    run.wall, run.tokens = now - t0, sum(counts.values())
    if t_first is not None:
        run.to_first, run.decode = t_first - t0, now - t_first
        run.decode_steps, run.decode_tokens = engine.stats().steps - steps0, run.tokens - tokens0
    return run


def warm_up(engine: Engine, batch: int) -> None:
    params = SamplingParams(temperature=0, max_new_tokens=4, ignore_eos=True)
    prompts = random_prompts(batch, 300, engine.model.config.vocab_size, 7)
    drive(engine, [Request(prompt=p, params=params) for p in prompts])
    evict_cache(engine)


# ---- sections -----------------------------------------------------------------------------------------------------


def copy_bandwidth(plan: Plan) -> dict[str, float]:
    """Device-to-device copy of ``copy_bytes`` (timed with CUDA events after 3 warm-up copies); the median of
    ``copy_iters``, counting bytes read + written (GB = 1e9 bytes)."""
    src = torch.ones(plan.copy_bytes // 4, dtype=torch.float32, device=plan.device)
    dst, samples = torch.empty_like(src), []
    for i in tqdm(range(3 + plan.copy_iters), desc="copy bandwidth", leave=False):
        if plan.device == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            stop.record()
            stop.synchronize()
            seconds = start.elapsed_time(stop) / 1e3
        else:
            began = time.perf_counter()
            dst.copy_(src)
            seconds = time.perf_counter() - began
        samples += [seconds] if i >= 3 else []
    del src, dst
    free_memory()
    seconds = statistics.median(samples)
    return {"bytes": plan.copy_bytes, "median_s": seconds, "gb_s": 2 * plan.copy_bytes / seconds / 1e9}


def _hf_run(model: Any, ids: torch.Tensor, n: int) -> torch.Tensor:
    with torch.inference_mode():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                              do_sample=False, pad_token_id=0)


def hf_generate(path: Path, plan: Plan) -> dict[int, dict[str, float]]:
    """transformers ``generate``, eager, sdpa attention, greedy, exactly ``new_tokens`` per prompt."""
    import transformers

    cfg = transformers.AutoConfig.from_pretrained(str(path))
    with torch.device(plan.device):
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, plan.dtype),
                                                              attn_implementation="sdpa").eval()
    out = {}
    try:
        for batch in tqdm(plan.hf_batches, desc=f"{path.name}: HF generate", unit="batch", leave=False):
            ids = torch.tensor(random_prompts(batch, plan.prompt_len, cfg.vocab_size, batch), device=plan.device)
            _hf_run(model, ids, 8)  # warm-up
            sync(plan)
            began = time.perf_counter()
            result = _hf_run(model, ids, plan.new_tokens)
            sync(plan)
            seconds = time.perf_counter() - began
            assert result.shape == (batch, plan.prompt_len + plan.new_tokens), result.shape
            out[batch] = {"seconds": seconds, "tok_s": batch * plan.new_tokens / seconds}
    finally:
        del model
        free_memory()
    return out


def decode(engine: Engine, plan: Plan, batches: list[int], label: str) -> dict[int, dict[str, float]]:
    """B random prompts, greedy, EOS ignored. Each batch runs twice on fresh prompts (no cache hits): a warm-up
    (kernel compiles, allocator growth), then the timed run."""
    params = SamplingParams(temperature=0, max_new_tokens=plan.new_tokens, ignore_eos=True)
    out = {}
    for batch in tqdm(batches, desc=f"{label}: decode", unit="batch", leave=False):
        for seed in (batch, 10_000 + batch):
            evict_cache(engine)
            prompts = random_prompts(batch, plan.prompt_len, engine.model.config.vocab_size, seed)
            run = drive(engine, [Request(prompt=p, params=params) for p in prompts])
        gaps_us = [g * 1e6 for g in run.gaps]
        out[batch] = {"decode_tok_s": run.decode_tokens / run.decode, "e2e_tok_s": run.tokens / run.wall,
                      "full_batch_tok_s": run.full_tokens / run.full if run.full_steps else float("nan"),
                      "full_batch_steps": run.full_steps,
                      "prefill_s": run.to_first, "decode_s": run.decode, "steps": run.decode_steps,
                      "step_ms": 1e3 * run.decode / max(1, run.decode_steps),
                      "gap_median_us": pct(gaps_us, 0.5), "gap_p90_us": pct(gaps_us, 0.9),
                      "idle_share": sum(run.gaps) / run.decode if run.gaps else float("nan")}
    return out


def triton_runs(plan: Plan) -> bool:
    """Triton kernels the engine uses only when asked (the extend kernel, fused_gemv) run: on CUDA, or
    interpreted (a smoke run under TRITON_INTERPRET=1)."""
    return not plan.smoke or os.environ.get("TRITON_INTERPRET") == "1"


def fused_gemv_batches(plan: Plan) -> list[int]:
    """The decode batches ``fused_gemv`` applies to (at most ``engine.kernels.gemv.MAX_ROWS`` tokens a step)."""
    from engine.kernels.gemv import MAX_ROWS

    return [b for b in plan.batches if b <= MAX_ROWS]


def prefill_kernels(plan: Plan) -> tuple[str, ...]:
    """The prefill attention paths to measure: torch SDPA, and the Triton extend kernel where it can run."""
    return ("sdpa", "triton") if triton_runs(plan) else ("sdpa",)


def prefill(engine: Engine, plan: Plan, label: str) -> list[dict[str, Any]]:
    """``prefill_prompts`` prompts of ``prefill_len`` random tokens, one new token each, at the engine's chunk_size;
    a warm-up, then the timed run; once per prefill attention path (``EngineConfig.prefill_attention``), on the same
    engine (its runner reads the choice at every step), so both use the same weights and KV pool."""
    params = SamplingParams(temperature=0, max_new_tokens=1, ignore_eos=True)
    tokens = plan.prefill_prompts * plan.prefill_len
    out = []
    for kernel in prefill_kernels(plan):
        engine.runner.prefill_attention = kernel
        for seed in tqdm((1, 2), desc=f"{label}: prefill ({kernel})", leave=False):
            evict_cache(engine)
            prompts = random_prompts(plan.prefill_prompts, plan.prefill_len, engine.model.config.vocab_size,
                                     20_000 + seed)
            run = drive(engine, [Request(prompt=p, params=params) for p in prompts])
        out.append({"chunk_size": engine.config.chunk_size, "kernel": kernel, "tokens": tokens, "seconds": run.wall,
                    "tok_s": tokens / run.wall})
    engine.runner.prefill_attention = engine.config.prefill_attention
    return out


def agent(engine: Engine, plan: Plan) -> dict[str, Any]:
    """Sessions sharing a system prompt and tools; each turn appends the answer and a tool result."""
    assert engine.tokenizer is not None
    warm_up(engine, plan.sessions)
    params = SamplingParams(temperature=0, max_new_tokens=plan.agent_new_tokens, ignore_eos=True)
    histories = [[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user_message(i)}]
                 for i in range(plan.sessions)]
    ids = [engine.tokenizer.encode_chat(h, tools=TOOLS) for h in histories]
    # The shared prefix (system prompt and tools, in tokens): the positions where every session's prompt agrees.
    shared = next((k for k, col in enumerate(zip(*ids, strict=False)) if len(set(col)) > 1), min(map(len, ids)))
    turns, previous = [], None
    for turn in tqdm(range(1, plan.turns + 1), desc="agent: turns", leave=False):
        requests = [Request(messages=list(h), tools=TOOLS, session_id=f"s{i}", params=params,
                            request_id=f"s{i}-t{turn}") for i, h in enumerate(histories)]
        run = drive(engine, requests)
        finals = [run.finals[r.request_id] for r in requests]
        if previous is None:  # the first request to run computes the shared prefix; the others may reuse it
            reusable = shared * (len(finals) - 1)
        else:  # the previous turn's prompt and output, less its last token (sampled, never computed)
            reusable = sum(p.prompt_tokens + p.completion_tokens - 1 for p in previous)
        cached, ttft = sum(f.cached_tokens for f in finals), [1e3 * run.ttft[r.request_id] for r in requests]
        turns.append({"turn": turn, "history_tokens": statistics.mean(f.prompt_tokens for f in finals),
                      "ttft_mean_ms": statistics.mean(ttft), "ttft_p90_ms": pct(ttft, 0.9), "cached": cached,
                      "reusable": reusable, "hit_rate": cached / reusable if reusable else float("nan"),
                      "prepare_ms_per_request": 1e3 * run.prepare_s / len(requests), "wall_s": run.wall})
        for i, r in enumerate(requests):
            histories[i] += [{"role": "assistant", "content": run.texts[r.request_id]},
                             {"role": "tool", "content": tool_result(i, turn)}]
        previous = finals
    for i in range(plan.sessions):
        engine.close_session(f"s{i}")
    evict_cache(engine)
    return {"shared_prefix_tokens": shared, "sessions": plan.sessions, "turns": turns}


CONSTRAINED_MODES = ("constrained", "unconstrained", "unconstrained, matched")


def constrained(engine: Engine, plan: Plan) -> dict[str, Any]:
    """The same chat prompts, temperature 0.7 with a seed per request: under a JSON schema (fast-forward on, the
    default), then without one (EOS ignored) at ``constrained_new_tokens`` each, then without one at the lengths the
    constrained requests reached (the same batch size at every step). Each mode runs twice: a warm-up, then timed."""
    n, out = plan.constrained_batch, {}
    lengths: list[int] = []  # the constrained requests' output lengths
    warm_up(engine, n)
    messages = [[{"role": "user", "content": f"Invent user profile number {i} for a test database and write it as "
                  "JSON with name, age, email, role, score and tags."}] for i in range(n)]
    for mode in tqdm(CONSTRAINED_MODES, desc="constrained", leave=False):
        spec = ConstraintSpec(json_schema=CONSTRAINED_SCHEMA) if mode == "constrained" else None
        caps = lengths if mode.endswith("matched") else [plan.constrained_new_tokens] * n
        for rep in ("warm-up", "timed"):
            evict_cache(engine)
            run = drive(engine, [Request(messages=m, constraint=spec, request_id=f"{mode}-{rep}-{i}", params=(
                SamplingParams(temperature=0.7, seed=i, ignore_eos=spec is None, max_new_tokens=caps[i])))
                for i, m in enumerate(messages)])
        if spec is not None:
            lengths = [run.finals[f"{mode}-timed-{i}"].completion_tokens for i in range(n)]
        out[mode] = {"requests": n, "tokens": run.tokens, "decode_tokens": run.decode_tokens, "decode_s": run.decode,
                     "tok_s": run.decode_tokens / run.decode if run.decode else float("nan"),
                     "e2e_tok_s": run.tokens / run.wall, "steps": run.decode_steps,
                     "stopped": sum(d.finish_reason == "stop" for d in run.finals.values())}
    return out


def bench_model(name: str, root: Path, plan: Plan, sections: set[str], copy_gb_s: float | None) -> dict[str, Any]:
    """HF first (then freed), then an engine with CUDA graphs, then one without (and chunk_size=prefill_chunk)."""
    path = write_model_dir(root, name, plan)
    res: dict[str, Any] = {}
    if "hf" in sections:
        res["hf"] = hf_generate(path, plan)
    if sections & {"decode", "hf", "prefill"} or (name == AGENT_MODEL and sections & {"agent", "constrained"}):
        engine = make_engine(path, plan, cuda_graphs=True)
        named = [(n, p.numel() * p.element_size()) for n, p in engine.model.named_parameters()]
        res["weights"] = {"all": sum(b for _, b in named), "embedding": sum(b for n, b in named if "embed_tokens" in n)}
        if sections & {"decode", "hf"}:
            res["decode"] = decode(engine, plan, plan.batches, f"{name} graphs")
        if "prefill" in sections:
            res["prefill"] = prefill(engine, plan, name)
        if name == AGENT_MODEL and "agent" in sections:
            res["agent"] = agent(engine, plan)
        if name == AGENT_MODEL and "constrained" in sections:
            res["constrained"] = constrained(engine, plan)
        del engine
        free_memory()
    small = fused_gemv_batches(plan) if "decode" in sections and triton_runs(plan) else []
    if small:
        engine = make_engine(path, plan, cuda_graphs=True, fused_gemv=True)
        res["decode_fused_gemv"] = decode(engine, plan, small, f"{name} fused_gemv")
        del engine
        free_memory()
    if sections & {"decode", "prefill"}:
        engine = make_engine(path, plan, cuda_graphs=False, chunk_size=plan.prefill_chunk)
        if "decode" in sections:
            res["decode_eager"] = decode(engine, plan, plan.eager_batches, f"{name} eager")
        if "prefill" in sections:
            res["prefill"] = [*res.get("prefill", []), *prefill(engine, plan, name)]
        del engine
        free_memory()
    if copy_gb_s and 1 in res.get("decode", {}):
        w = res["weights"]
        res["roofline"] = {"copy_gb_s": copy_gb_s, "tok_s": copy_gb_s * 1e9 / w["all"],
                           "tok_s_no_embedding": copy_gb_s * 1e9 / (w["all"] - w["embedding"])}
    return res


def table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    if rows:
        print(f"\n### {title}\n\n| " + " | ".join(headers) + " |")
        print("|" + "|".join("---" if i == 0 else "--:" for i in range(len(headers))) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")


def num(value: float, fmt: str, unit: str = "") -> str:
    """``-`` for NaN (the GPU timeline is empty on CPU)."""
    return "-" if value != value else f"{value:{fmt}}{unit}"


def goal(text: str, ok: bool, plan: Plan) -> str:
    """A target next to a value, ticked or crossed; nothing in a smoke run."""
    return "" if plan.smoke else f" ({text} {'✓' if ok else '✗'})"


def decode_tables(models: dict[str, Any], plan: Plan) -> None:
    rows = []
    for name, r in models.items():
        for key, graphs in (("decode", "on"), ("decode_eager", "off")):
            for b, d in r.get(key, {}).items():
                tps, target = d["decode_tok_s"], DECODE_TARGETS.get(b) if graphs == "on" else None
                full = d.get("full_batch_tok_s", float("nan"))
                eager = r.get("decode_eager", {}).get(b) if graphs == "on" else None
                rows.append([name, str(b), graphs, f"{tps:,.1f}",
                             num(full, ",.1f") + (goal(f"≥ {target:,.0f}", full >= target, plan) if target else ""),
                             f"{tps / eager['decode_tok_s']:.2f}x" if eager else "", f"{d['e2e_tok_s']:,.1f}",
                             f"{d['prefill_s']:.3f}", f"{d['step_ms']:.2f}", num(d["gap_median_us"], ".0f"),
                             num(d["gap_p90_us"], ".0f"), num(100 * d["idle_share"], ".1f", "%")])
    table(f"Decode: prompt {plan.prompt_len} random tokens, {plan.new_tokens} new, greedy ({plan.dtype})",
          ["model", "batch", "CUDA graphs", "decode tok/s", "full batch tok/s", "vs graphs off", "end-to-end tok/s",
           "to first tokens s", "step ms", "GPU idle gap median µs", "p90 µs", "GPU idle share"], rows)
    rows = []
    for name, r in ((name, r) for name, r in models.items() if "roofline" in r):
        tps, roof = r["decode"][1]["decode_tok_s"], r["roofline"]
        share = tps / roof["tok_s"]
        rows.append([name, f"{r['weights']['all'] / 1e9:.2f}", f"{roof['copy_gb_s']:,.0f}", f"{roof['tok_s']:,.1f}",
                     f"{tps:,.1f}", f"{100 * share:.1f}%" + goal("≥ 90%", share >= 0.9, plan),
                     f"{100 * tps / roof['tok_s_no_embedding']:.1f}%"])
    table("Memory roofline at batch 1 (weight bytes / copy bandwidth per token)",
          ["model", "weights GB", "copy GB/s", "roofline tok/s", "batch-1 tok/s", "% of roofline",
           "% excluding the input embedding"], rows)
    rows = []
    for name, r in models.items():
        for b, d in r.get("decode_fused_gemv", {}).items():
            base = r["decode"][b]["decode_tok_s"]
            roof = r.get("roofline", {}).get("tok_s")
            rows.append([name, str(b), f"{base:,.1f}", f"{d['decode_tok_s']:,.1f}", f"{d['decode_tok_s'] / base:.3f}x",
                         f"{100 * d['decode_tok_s'] / roof:.1f}%" if roof else "", f"{d['step_ms']:.2f}"])
    table("Decode with fused_gemv (projections as Triton kernels with the norms and SiLU·mul fused in; CUDA "
          "graphs on both sides) against the default (cuBLAS and separate kernels)",
          ["model", "batch", "default tok/s", "fused_gemv tok/s", "ratio", "% of roofline", "step ms"], rows)
    rows = [[name, str(b), f"{ours['e2e_tok_s']:,.1f}", f"{ours['decode_tok_s']:,.1f}", f"{h['tok_s']:,.1f}",
             f"{ours['e2e_tok_s'] / h['tok_s']:.1f}x"]
            for name, r in models.items() for b, h in r.get("hf", {}).items()
            if (ours := r.get("decode", {}).get(b))]
    table(f"agentflow vs transformers generate (eager, sdpa): prompt {plan.prompt_len}, {plan.new_tokens} new",
          ["model", "batch", "agentflow end-to-end tok/s", "agentflow decode tok/s", "HF tok/s", "ratio (end-to-end)"],
          rows)
    rows = [[name, f"{plan.prefill_prompts} x {plan.prefill_len}", str(p["chunk_size"]), p["kernel"],
             f"{p['seconds']:.3f}", f"{p['tok_s']:,.0f}", _vs_sdpa(p, r["prefill"])]
            for name, r in models.items() for p in r.get("prefill", [])]
    table("Prefill (one new token per prompt; chunk_size = most prompt tokens per step; attention: torch SDPA over "
          "the gathered context, or the Triton extend kernel)",
          ["model", "prompts x tokens", "chunk_size", "attention", "seconds", "tok/s", "vs sdpa"], rows)


def _vs_sdpa(p: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    base = next((q for q in runs if q["chunk_size"] == p["chunk_size"] and q["kernel"] == "sdpa"), None)
    return f"{p['tok_s'] / base['tok_s']:.2f}x" if base else ""


def report(results: dict[str, Any], plan: Plan) -> None:
    print("\n" + "  ".join(f"{k}: {v}" for k, v in results["versions"].items()))
    if plan.smoke:
        print("SMOKE RUN: tiny shapes on CPU, float32. The numbers only show that the script works.")
    if "copy" in results:
        c = results["copy"]
        table("Copy bandwidth (device to device, read + write)", ["bytes", "median time", "GB/s"],
              [[f"{c['bytes'] / (1 << 30):.3g} GiB", f"{1e3 * c['median_s']:.3f} ms", f"{c['gb_s']:,.0f}"]])
    decode_tables(results["models"], plan)
    a, rows = results["models"].get(AGENT_MODEL, {}).get("agent"), []
    for t in a["turns"] if a else []:
        ratio = t["ttft_mean_ms"] / a["turns"][0]["ttft_mean_ms"]
        rows.append([str(t["turn"]), f"{t['history_tokens']:,.0f}", f"{t['ttft_mean_ms']:,.1f}",
                     f"{t['ttft_p90_ms']:,.1f}", f"{ratio:.2f}" + (goal("≤ 1.2", ratio <= 1.2, plan) if t["turn"] > 1
                                                                     else ""),
                     f"{t['cached']:,}", f"{t['reusable']:,}",
                     f"{100 * t['hit_rate']:.1f}%" + goal("≥ 90%", t["hit_rate"] >= 0.9, plan),
                     f"{t['prepare_ms_per_request']:.2f}"])
    table(f"Agent workload ({AGENT_MODEL}): {plan.sessions} sessions, shared prefix "
          f"{a['shared_prefix_tokens'] if a else '?'} tokens (system + {len(TOOLS)} tools), "
          f"{plan.agent_new_tokens} new tokens per turn",
          ["turn", "history tokens", "TTFT mean ms", "TTFT p90 ms", "TTFT / turn 1", "cached tokens",
           "reusable tokens", "hit rate", "tokenize ms/request"], rows)
    c, rows = results["models"].get(AGENT_MODEL, {}).get("constrained"), []
    for mode in CONSTRAINED_MODES if c else ():
        m, ratio = c[mode], c["constrained"]["tok_s"] / c[mode]["tok_s"]
        rows.append([mode, f"{m['tokens']:,}", str(m["stopped"]), str(m["steps"]), f"{m['decode_s']:.3f}",
                     f"{m['tok_s']:,.1f}", f"{ratio:.3f}" + (goal("≥ 0.95", ratio >= 0.95, plan) if
                                                             mode.endswith("matched") else "")])
    table(f"Constrained decoding ({AGENT_MODEL}, {plan.constrained_batch} requests, temperature 0.7, at most "
          f"{plan.constrained_new_tokens} new tokens; the decode phase)",
          ["mode", "generated tokens", "ended by grammar", "decode steps", "decode s", "tok/s",
           "constrained ÷ this"], rows)


def versions(plan: Plan) -> dict[str, str]:
    import transformers

    triton_version = importlib.metadata.version("triton") if importlib.util.find_spec("triton") else "not installed"
    gpu = torch.cuda.get_device_name() if plan.device == "cuda" else "none (CPU)"
    return {"GPU": gpu, "torch": torch.__version__, "CUDA": str(torch.version.cuda), "triton": triton_version,
            "transformers": transformers.__version__, "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (checks the script runs)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--hf-batches", default=None, help="batches for transformers generate (default 1,16,64)")
    parser.add_argument("--kv-gib", type=float, default=None, help="KV pool size per engine (default 16)")
    parser.add_argument("--mask-threads", type=int, default=None,
                        help="grammar-mask worker threads (default: the engine's, 1)")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    parser.add_argument("-v", "--verbose", action="store_true", help="engine logs (graph capture, loading)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    models, sections = args.models.split(","), set(args.sections.split(","))
    for bad in [m for m in models if m not in MODELS] + sorted(sections - set(SECTIONS)):
        parser.error(f"unknown model or section {bad!r}")
    plan = SMOKE_PLAN if args.smoke else Plan()
    if args.hf_batches:
        plan = replace(plan, hf_batches=[int(b) for b in args.hf_batches.split(",")])
    if args.kv_gib:
        plan = replace(plan, kv_gib=args.kv_gib)
    if args.mask_threads is not None:
        plan = replace(plan, mask_threads=args.mask_threads)
    if not plan.smoke and not torch.cuda.is_available():
        sys.exit(f"bench/engine_gpu.py needs a CUDA GPU (torch {torch.__version__} sees none); "
                 "use --smoke to check the script on CPU")
    if sections & {"agent", "constrained"} and AGENT_MODEL not in models:
        log.warning("the agent and constrained sections run on %s only, which is not in --models", AGENT_MODEL)
    results: dict[str, Any] = {"versions": versions(plan), "plan": asdict(plan), "models": {}}
    if "copy" in sections:
        results["copy"] = copy_bandwidth(plan)
    with tempfile.TemporaryDirectory(prefix="engine-gpu-") as root:
        for name in tqdm(models, desc="models", unit="model"):
            results["models"][name] = bench_model(name, Path(root), plan, sections,
                                                  results.get("copy", {}).get("gb_s"))
    report(results, plan)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
