"""What schema constraints cost: engine throughput with and without them, and our mask work per
token against calling llguidance directly, on the same schemas, in one run.

    python bench/constrained.py                     # CPU demo model, batches 1, 16, 64 (~4 minutes)
    python bench/constrained.py --device cuda       # on a GPU

Schemas: the ``parameters`` of BFCL tools (``../shared/data/tool-schemas``) that come with example
arguments, spread over the file, as ``json_schema`` constraints: real tool arguments.

Part 1, throughput. A closed loop keeps ``B`` requests in flight (a finished one is replaced at
once, same prompt, new seed) and counts generated tokens per second over ``--steps`` engine steps
after a warm-up. Rows: unconstrained; constrained with fast-forward (the default); constrained with
it off (pure mask cost). Target: constrained >= 95% of unconstrained at batch 64.

Part 2, one matcher, per token: compute the mask, advance, apply the mask to a logits row, ours
(``GrammarConstraint`` + ``apply_token_bitmask_``) vs llguidance's own Python API
(``llguidance.torch.fill_next_token_bitmask``, ``consume_token``, ``apply_token_bitmask_inplace``),
walking the same token sequences (BFCL's example arguments, and outputs finished in part 1).

Part 3, a batch's masks per step: ours (``BitmaskFiller``, a thread pool) vs llguidance's
``fill_next_token_bitmask_par`` (its Rust thread pool), same matchers, same states.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import llguidance
import llguidance.torch as llg_torch
import torch
from tqdm import tqdm

from engine import Engine, Request, SamplingParams
from engine.constrained import ConstraintSpec, compile_constraint, llg_tokenizer
from engine.constrained.compiler import JSON_OPTIONS
from engine.errors import EngineError
from engine.sampling import BitmaskFiller, apply_token_bitmask_, bitmask_words

TOOLS_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tool-schemas" / "openai_tools.jsonl"
PROMPT = "Write the arguments of the call as JSON:"


def load_schemas(engine: Engine, count: int) -> list[tuple[dict[str, Any], list[int]]]:
    """``count`` BFCL parameter schemas, spread over the file's tools that carry example arguments,
    each with those arguments as tokens (written the way our grammar writes JSON: schema key order,
    ``", "`` and ``": "``), kept when the schema compiles and its matcher accepts the example."""
    assert engine.tokenizer is not None
    rows = [json.loads(line) for line in TOOLS_FILE.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if isinstance(r.get("example_arguments"), dict)]
    out: list[tuple[dict[str, Any], list[int]]] = []
    for row in rows[:: max(1, len(rows) // (count * 2))]:
        schema = row["tool"]["function"].get("parameters") or {"type": "object"}
        example = row["example_arguments"]
        order = list(schema.get("properties", {}))
        ordered = {k: example[k] for k in sorted(example, key=lambda k: order.index(k) if k in order else len(order))}
        ids = engine.tokenizer.encode(json.dumps(ordered, separators=(", ", ": "), ensure_ascii=False))
        try:
            c = compile_constraint(ConstraintSpec(json_schema=schema), engine.tokenizer)
            for t in ids:
                c.advance(t)
        except EngineError:
            continue
        if c.is_accepting():
            out.append((schema, ids))
        if len(out) == count:
            break
    return out


# ---- part 1: throughput ---------------------------------------------------------------------------

def closed_loop(engine: Engine, make: Callable[[int], Request], batch: int, *, warmup: int,
                steps: int) -> tuple[float, float, list[tuple[Any, list[int]]]]:
    """Keep ``batch`` requests in flight for ``warmup + steps`` steps. Returns generated tokens per
    second and forward steps per generated token over the measured steps, and the token ids of the
    requests that finished with ``stop``, with their constraint."""
    flight: set[str] = set()
    finished: list[tuple[Any, list[int]]] = []
    seqs: dict[str, Any] = {}
    n = 0

    def top_up() -> None:
        nonlocal n
        while len(flight) < batch:
            seq = engine.prepare(make(n))
            n += 1
            engine.add_request(seq)
            flight.add(seq.request_id)
            seqs[seq.request_id] = seq

    def one_step() -> None:
        top_up()
        for delta in engine.step():
            if delta.finished:
                flight.discard(delta.request_id)
                seq = seqs.pop(delta.request_id)
                if seq.finish_reason == "stop":
                    finished.append((seq.spec, seq.output_ids))

    for _ in range(warmup):
        one_step()
    before = engine.stats()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    elapsed = time.perf_counter() - start
    after = engine.stats()
    for request_id in list(flight):  # leave the engine empty for the next configuration
        engine.abort(request_id)
    tokens = after.generated_tokens - before.generated_tokens
    return tokens / elapsed, (after.steps - before.steps) / max(tokens, 1), finished


def throughput(engine_on: Engine, engine_off: Engine, schemas: list[dict[str, Any]], batches: list[int],
               steps: int, max_new_tokens: int) -> tuple[list[list[object]], dict[int, list[tuple[Any, list[int]]]]]:
    def make(constrained: bool) -> Callable[[int], Request]:
        def request(i: int) -> Request:
            params = SamplingParams(seed=i, max_new_tokens=max_new_tokens)
            spec = ConstraintSpec(json_schema=schemas[i % len(schemas)]) if constrained else None
            return Request(prompt=PROMPT, params=params, constraint=spec)
        return request

    rows: list[list[object]] = []
    outputs: dict[int, list[tuple[Any, list[int]]]] = {}
    bar = tqdm(total=3 * len(batches), desc="throughput", unit="run")
    for batch in batches:
        warmup = max(8, steps // 4)
        plain, plain_spt, _ = closed_loop(engine_on, make(False), batch, warmup=warmup, steps=steps)
        bar.update()
        on, on_spt, finished = closed_loop(engine_on, make(True), batch, warmup=warmup, steps=steps)
        bar.update()
        off, _, _ = closed_loop(engine_off, make(True), batch, warmup=warmup, steps=steps)
        bar.update()
        outputs[batch] = finished
        rows.append([batch, f"{plain:.0f}", f"{on:.0f}", f"{on / plain:.2f}", f"{off:.0f}", f"{off / plain:.2f}",
                     f"{plain_spt:.2f}", f"{on_spt:.2f}"])
    bar.close()
    return rows, outputs


# ---- part 2: one matcher, per token -----------------------------------------------------------------

def per_token(engine: Engine, walks: list[tuple[dict[str, Any], list[int]]], repeats: int) -> list[list[object]]:
    """µs per token for fill + advance and for apply, ours vs llguidance direct."""
    assert engine.tokenizer is not None
    llt = llg_tokenizer(engine.tokenizer)
    width = engine.logit_width
    grammars = [llguidance.LLMatcher.grammar_from_json_schema(s, defaults=JSON_OPTIONS) for s, _ in walks]
    tokens = sum(len(ids) for _, ids in walks)
    logits = torch.randn(1, width)

    def ours_fill() -> None:
        row = torch.empty(bitmask_words(width), dtype=torch.int32)
        for (schema, ids) in walks:
            c = compile_constraint(ConstraintSpec(json_schema=schema), engine.tokenizer)  # type: ignore[arg-type]
            for t in ids:
                c.fill_bitmask(row)
                c.advance(t)

    compiled = [llguidance.LLMatcher(llt, g, log_level=0) for g in grammars]
    raw_mask = llg_torch.allocate_token_bitmask(1, llt.vocab_size)

    def raw_fill() -> None:  # llguidance direct; like ours, each walk starts from a copy of a compiled matcher
        for m0, (_, ids) in zip(compiled, walks, strict=True):
            m = m0.deep_copy()
            for t in ids:
                llg_torch.fill_next_token_bitmask(m, raw_mask, 0)
                m.consume_token(t)

    bitmask = torch.full((1, bitmask_words(width)), 0x55555555, dtype=torch.int32)

    def ours_apply() -> None:
        for _ in range(tokens):
            apply_token_bitmask_(logits, bitmask)

    def raw_apply() -> None:
        for _ in range(tokens):
            llg_torch.apply_token_bitmask_inplace(logits, bitmask)

    def best(fn: Callable[[], None]) -> float:
        return _timed(fn, repeats, min) / tokens * 1e6

    rows = []
    ours_f, raw_c = best(ours_fill), best(raw_fill)
    rows.append(["mask + advance", f"{ours_f:.1f}", f"{raw_c:.1f}", f"{ours_f / raw_c:.2f}"])
    ours_a, raw_a = best(ours_apply), best(raw_apply)
    rows.append([f"apply to a {width}-wide logits row", f"{ours_a:.1f}", f"{raw_a:.1f}", f"{ours_a / raw_a:.2f}"])
    rows.append(["total per token", f"{ours_f + ours_a:.1f}", f"{raw_c + raw_a:.1f}",
                 f"{(ours_f + ours_a) / (raw_c + raw_a):.2f}"])
    return rows


# ---- part 3: a batch of masks per step ------------------------------------------------------------

def batch_fill(engine: Engine, walks: list[tuple[dict[str, Any], list[int]]], batches: list[int], threads: int,
               repeats: int) -> list[list[object]]:
    """Per step: fill ``B`` masks (matchers advanced to the same mid-output states), ours vs llguidance's."""
    assert engine.tokenizer is not None
    llt = llg_tokenizer(engine.tokenizer)
    width = engine.logit_width
    filler = BitmaskFiller(threads)
    executor = llguidance.LLExecutor(threads)
    rows = []
    for batch in batches:
        constraints = []
        for k in range(batch):
            schema, ids = walks[k % len(walks)]
            c = compile_constraint(ConstraintSpec(json_schema=schema), engine.tokenizer)
            for t in ids[: len(ids) // 2]:
                c.advance(t)
            constraints.append(c)
        matchers = [(c._matcher, k) for k, c in enumerate(constraints)]  # the same llguidance objects, same states
        raw_mask = llg_torch.allocate_token_bitmask(batch, llt.vocab_size)

        def ours() -> None:
            filler.start(list(range(batch)), constraints, width).wait()  # noqa: B023

        def raw() -> None:
            llg_torch.fill_next_token_bitmask_par(executor, matchers, raw_mask)  # noqa: B023

        t_ours, t_raw = _timed(ours, repeats, statistics.median), _timed(raw, repeats, statistics.median)
        rows.append([batch, f"{t_ours * 1e6:.0f}", f"{t_raw * 1e6:.0f}", f"{t_ours / t_raw:.2f}"])
    return rows


def _timed(fn: Callable[[], None], repeats: int, reduce: Callable[[list[float]], float]) -> float:
    """Seconds per call of ``fn``: one warm-up call, then ``reduce`` (min, median) of ``repeats``."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return reduce(samples)


def table(header: list[str], rows: list[list[object]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(r: list[object]) -> str:
        return "  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(r, widths,
                                                                                                  strict=True)))

    return "\n".join([line(list(header)), line(["-" * w for w in widths]), *map(line, rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--steps", type=int, default=48, help="measured engine steps per configuration")
    parser.add_argument("--schemas", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--device", default=None, help="engine device (default: cuda when available, else cpu)")
    parser.add_argument("--mask-threads", type=int, default=None, help="EngineConfig.mask_threads (default: auto)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    options: dict[str, Any] = {"max_kv_tokens": 64 * 1024, "mask_threads": args.mask_threads}
    if args.device:
        options["device"] = args.device
    engine_on = Engine("demo", **options)
    engine_off = Engine("demo", fast_forward=False, **options)
    examples = load_schemas(engine_on, args.schemas)
    schemas = [schema for schema, _ in examples]
    threads = engine_on.sampler.masks.threads
    print(f"device {engine_on.device}, torch threads {torch.get_num_threads()}, mask threads {threads}, "
          f"{len(schemas)} BFCL parameter schemas, max_new_tokens {args.max_new_tokens}, llguidance "
          f"{getattr(llguidance, '__version__', '?')}")

    rows, outputs = throughput(engine_on, engine_off, schemas, batches, args.steps, args.max_new_tokens)
    print("\nPart 1: generated tokens/s, closed loop (ratio: constrained / unconstrained)")
    print(table(["batch", "unconstrained", "constrained", "ratio", "constrained, no ff", "ratio",
                 "steps/token plain", "steps/token ff"], rows))

    finished = [(spec.json_schema, [t for t in ids if t not in engine_on.eos_token_ids])
                for b in batches for spec, ids in outputs[b]]
    walks = examples + finished  # BFCL's example arguments, then what the model wrote and finished
    print(f"\nPart 2: µs per token, one matcher ({len(walks)} outputs, {sum(len(w) for _, w in walks)} tokens; "
          "ratio: ours / llguidance)")
    print(table(["work", "ours", "llguidance", "ratio"], per_token(engine_on, walks, args.repeats)))
    print(f"\nPart 3: µs per step to fill a batch's masks ({threads} threads each; ratio: ours / llguidance)")
    print(table(["batch", "ours", "llguidance par", "ratio"],
                batch_fill(engine_on, walks, batches, max(threads, 1), args.repeats * 4)))


if __name__ == "__main__":
    main()
