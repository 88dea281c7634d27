"""Tool calls generated under BFCL's real tool schemas, on the built-in demo model (random weights).

    python bench/bfcl_toolcalls.py                  # 640 tools, about 3 minutes on 2 cores
    python bench/bfcl_toolcalls.py --limit 0        # every tool that compiles (~2,660)

A random-weight model is the hardest client for a grammar: it picks any allowed token, so every
corner of every schema gets exercised. Part 1: one request per tool, ``tool_choice="required"``.
Every finished output must have at least one call and every call must parse and validate (checked
independently here with jsonschema + ECMA-262 patterns, besides the engine's own check, which raises
``ConstraintViolationError``). Outputs cut by ``--max-new-tokens`` are counted apart: their last call
was still being written (a string with no maxLength can run on). Part 2: OpenAI's ``tool_choice``
semantics on requests offering three tools each: ``auto`` (text, calls, or text then calls), ``none``
(text only), a named function (exactly one call, of that function), ``required`` with parallel calls.

Tools come from ``../shared/data/tool-schemas/openai_tools.jsonl`` (BFCL v4, see its SOURCES.md).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from engine.constrained import ConstraintSpec, compile_constraint
from engine.constrained.ecma_validator import ecma_validator, is_valid
from engine.constrained.spec import ToolCallSpec
from engine.errors import ConstraintViolationError, InvalidRequestError

if TYPE_CHECKING:
    from engine import Engine, Output, Request

TOOLS_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tool-schemas" / "openai_tools.jsonl"
PROMPT = "Use the tools to answer: what should we do next?"


def load_tools(path: Path = TOOLS_FILE) -> list[dict[str, Any]]:
    """The file's tools in OpenAI function format, in file order."""
    return [json.loads(line)["tool"] for line in path.read_text().splitlines() if line.strip()]


def compilable(engine: Engine, tools: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The tools whose ``required`` grammar compiles alone, and why the others were refused."""
    assert engine.tokenizer is not None
    ok, refused = [], Counter[str]()
    for tool in tools:
        try:
            spec = ConstraintSpec(tool_calls=ToolCallSpec([tool], tool_choice="required"))
            compile_constraint(spec, engine.tokenizer)
            ok.append(tool)
        except InvalidRequestError as e:
            refused[_reason(str(e))] += 1
    return ok, refused


def spread(items: list[Any], limit: int) -> list[Any]:
    """``limit`` items evenly spaced through ``items`` (all of them when ``limit`` is 0 or more)."""
    if limit <= 0 or limit >= len(items):
        return items
    return [items[i * len(items) // limit] for i in range(limit)]


@dataclass
class Judged:
    """One output's outcome. ``outcome``: ``valid`` (finished; calls present where required, each
    parsed and valid), ``cut`` (hit the token cap), ``violation`` (the engine's own check raised),
    ``invalid`` (the independent check failed), ``wrong`` (the tool_choice rule was broken)."""

    outcome: str
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    content: str = ""
    detail: str = ""


def run(engine: Engine, requests: list[Request], *, batch: int,
        progress: str | None = None) -> list[Output | ConstraintViolationError]:
    """Run ``requests``, ``batch`` in flight at a time; each result is its ``Output`` or the
    ``ConstraintViolationError`` the engine raised for it (one request's failure loses no other)."""
    results: dict[str, Output | ConstraintViolationError] = {}
    pending = list(reversed(requests))
    flight: dict[str, Any] = {}
    bar = tqdm(total=len(requests), desc=progress, unit="req", disable=progress is None)
    while pending or flight:
        while pending and len(flight) < batch:
            seq = engine.prepare(pending.pop())
            engine.add_request(seq)
            flight[seq.request_id] = seq
        for delta in engine.step():
            if delta.finished:
                seq = flight.pop(delta.request_id)
                try:
                    results[delta.request_id] = engine.output(seq)
                except ConstraintViolationError as e:
                    results[delta.request_id] = e
                bar.update()
    bar.close()
    return [results[r.request_id] for r in requests]


def judge(result: Output | ConstraintViolationError, tools: list[dict[str, Any]], choice: Any) -> Judged:
    """Check one result against OpenAI's ``tool_choice`` rules and the tools' schemas."""
    if isinstance(result, ConstraintViolationError):
        return Judged("violation", detail=str(result)[:200])
    if result.tool_calls is None:
        return Judged("invalid", detail="no tool_calls on a tool-call request")
    schemas = {t["function"]["name"]: t["function"].get("parameters") or {"type": "object"} for t in tools}
    calls = [(c.name, c.arguments) for c in result.tool_calls]
    for name, arguments in calls:
        if name not in schemas or not is_valid(ecma_validator(schemas[name]), arguments):
            return Judged("invalid", calls, result.content or "", f"{name}: {json.dumps(arguments)[:120]}")
    if result.finish_reason == "length":
        return Judged("cut", calls, result.content or "")
    named = choice["function"]["name"] if isinstance(choice, dict) else None
    wrong = (choice == "required" and not calls) or (choice == "none" and calls) \
        or (choice == "required" and result.content) \
        or (named is not None and [n for n, _ in calls] != [named])
    return Judged("wrong" if wrong else "valid", calls, result.content or "")


def tool_requests(tools: list[dict[str, Any]], choice: Any, *, seed: int, max_new_tokens: int,
                  group: int = 1) -> list[tuple[Request, list[dict[str, Any]]]]:
    """One request per ``group`` consecutive tools (names made unique within a request), seeded."""
    from engine import Request, SamplingParams

    out = []
    for k in range(0, len(tools) - group + 1, group):
        offered = _unique_names(tools[k:k + group])
        pick = {"type": "function", "function": {"name": offered[0]["function"]["name"]}} if choice == "named" \
            else choice
        spec = ConstraintSpec(tool_calls=ToolCallSpec(offered, tool_choice=pick))
        params = SamplingParams(seed=seed + k, max_new_tokens=max_new_tokens)
        out.append((Request(messages=[{"role": "user", "content": PROMPT}], tools=offered, params=params,
                            constraint=spec), offered))
    return out


def _unique_names(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: Counter[str] = Counter()
    out = []
    for tool in tools:
        name = tool["function"]["name"]
        seen[name] += 1
        if seen[name] > 1:
            tool = {**tool, "function": {**tool["function"], "name": f"{name}_{seen[name]}"}}
        out.append(tool)
    return out


def evaluate(engine: Engine, tools: list[dict[str, Any]], choice: Any, *, seed: int, max_new_tokens: int,
             batch: int, group: int = 1, progress: bool = False) -> list[Judged]:
    pairs = tool_requests(tools, choice, seed=seed, max_new_tokens=max_new_tokens, group=group)
    label = f"{choice if isinstance(choice, str) else 'named'} x{group}" if progress else None
    results = run(engine, [r for r, _ in pairs], batch=batch, progress=label)
    return [judge(res, offered, r.constraint.tool_calls.tool_choice) for res, (r, offered) in zip(results, pairs,
                                                                                                 strict=True)]


def table(header: list[str], rows: list[list[object]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = lambda r: "  ".join(str(x).rjust(w) if i else str(x).ljust(w)  # noqa: E731
                               for i, (x, w) in enumerate(zip(r, widths, strict=True)))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def summary_row(name: str, judged: list[Judged], extra: Callable[[list[Judged]], str]) -> list[object]:
    c = Counter(j.outcome for j in judged)
    calls = sum(len(j.calls) for j in judged)
    finished = len(judged) - c["cut"]
    ok = c["valid"] / finished if finished else 1.0
    return [name, len(judged), finished, c["cut"], calls, c["valid"], c["invalid"] + c["violation"], c["wrong"],
            f"{ok:.1%}", extra(judged)]


def _reason(message: str) -> str:
    text = message.split(": ", 2)[-1]
    return text[:70]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--limit", type=int, default=640, help="tools in part 1, spread over the file (0: all)")
    parser.add_argument("--semantics", type=int, default=96, help="requests per tool_choice mode in part 2")
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from engine import Engine

    engine = Engine("demo", max_kv_tokens=64 * 1024)
    tools = load_tools()
    start = time.perf_counter()
    ok, refused = compilable(engine, tools)
    print(f"BFCL tools: {len(tools)}; required grammar compiles for {len(ok)}; refused {sum(refused.values())} "
          f"({time.perf_counter() - start:.1f} s)")
    for reason, n in refused.most_common(5):
        print(f"  refused x{n}: {reason}")

    header = ["run", "requests", "finished", "cut", "calls", "valid", "invalid", "wrong rule", "valid/finished",
              "notes"]
    rows = []
    start = time.perf_counter()
    part1 = evaluate(engine, spread(ok, args.limit), "required", seed=args.seed,
                     max_new_tokens=args.max_new_tokens, batch=args.batch, progress=True)
    rows.append(summary_row("required, 1 tool", part1, lambda js: f"{time.perf_counter() - start:.0f} s"))
    sample = spread(ok, 3 * args.semantics)
    modes: list[tuple[str, Any, Callable[[list[Judged]], str]]] = [
        ("auto, 3 tools", "auto", lambda js: f"{sum(1 for j in js if j.calls)} with calls, "
                                             f"{sum(1 for j in js if j.content and j.calls)} text+calls"),
        ("none, 3 tools", "none", lambda js: f"{sum(1 for j in js if j.content)} with text"),
        ("named, 3 tools", "named", lambda js: "calls all name the named tool" if not any(
            j.outcome == "wrong" for j in js) else "see wrong rule"),
        ("required, 3 tools", "required", lambda js: f"{sum(1 for j in js if len(j.calls) >= 2)} with 2+ calls"),
    ]
    for name, choice, extra in modes:
        judged = evaluate(engine, sample, choice, seed=args.seed, max_new_tokens=args.max_new_tokens,
                          batch=args.batch, group=3, progress=True)
        rows.append(summary_row(name, judged, extra))
        for j in judged:
            if j.outcome in ("invalid", "violation", "wrong"):
                print(f"  {name}: {j.outcome}: {j.detail or j.calls}")
    print()
    print(table(header, rows))
    stats = engine.stats()
    print(f"\nengine: {stats.steps} forward steps, {stats.generated_tokens} tokens generated, "
          f"{stats.forced_tokens} of them forced by the grammar (fast-forward)")


if __name__ == "__main__":
    main()
