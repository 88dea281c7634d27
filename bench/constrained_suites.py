"""Schema-constrained decoding on real data: the JSON Schema Test Suite and JSONSchemaBench.

    python bench/constrained_suites.py                       # everything (about 2 minutes on 2 cores)
    python bench/constrained_suites.py --limit 40 --max-new-tokens 128

Part 1, JSON Schema Test Suite (draft 2020-12, ``optional/`` and ``optional/format/`` included).
Each test schema is compiled the engine's way (``compile_constraint``); for each compiled one,
every test instance is written as our grammar writes JSON (``dump``) and walked token by token
through a fresh matcher. "agree" means valid instances were accepted and invalid ones rejected.
Part 2, JSONSchemaBench (the MaskBench copy, with valid and invalid instances): every schema is
compiled and its instances walked the same way; then the built-in demo model (random weights)
generates under ``--limit`` compiled schemas spread across the splits, and every completed
output is parsed and validated.

The hard rule of both parts: an instance (or output) the matcher accepts must pass the reference
validator (``reference_validator``). Disagreements that do not break it are listed, with their
reasons, in ``tests/data/jsonschema_known_differences.json``; ``tests/test_constrained_suites.py``
asserts both, on the same functions.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from engine.constrained import ConstraintSpec, GrammarConstraint, compile_constraint, llg_tokenizer
from engine.constrained.compiler import JSON_OPTIONS
from engine.constrained.ecma_validator import ecma_validator, is_valid
from engine.errors import EngineError, InvalidRequestError

if TYPE_CHECKING:
    from engine import Engine
    from engine.tokenizer import Tokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""The shared data folder, ``../shared/data`` from the repository root (see each folder's SOURCES.md)."""
SUITE = DATA / "json-schema-test-suite" / "tests" / "draft2020-12"
JSB = DATA / "jsonschemabench"
KNOWN_DIFFERENCES = Path(__file__).resolve().parents[1] / "tests" / "data" / "jsonschema_known_differences.json"


# ---- writing and walking one instance ------------------------------------------------------------

def dump(value: object) -> str:
    """``value`` as our grammar writes JSON: ``JSON_OPTIONS``' separators, no other whitespace,
    non-ASCII characters raw (UTF-8), floats as Python's shortest round-trip ``repr`` (``1.0``,
    ``1e+308``, ``1.5e-07``), integers exactly."""
    separators = (JSON_OPTIONS.get("item_separator") or ",", JSON_OPTIONS.get("key_separator") or ":")
    return json.dumps(value, separators=separators, ensure_ascii=False)


def encode(tokenizer: Tokenizer, text: str) -> list[int]:
    """``text``'s tokens, byte for byte. Qwen2.5's tokenizer NFC-normalizes (``a`` + U+0308 becomes
    ``ä``), which would walk different bytes; there llguidance's greedy tokenization is used."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    llt = llg_tokenizer(tokenizer)
    if llt.decode_bytes(ids) != text.encode():
        ids = llt.greedy_tokenize(text)
    return ids


def compile_error(schema: object, tokenizer: Tokenizer) -> str | None:
    """Why the engine refuses ``schema`` (one line), or None when it compiles."""
    try:
        compile_constraint(ConstraintSpec(json_schema=schema), tokenizer)  # type: ignore[arg-type]
    except InvalidRequestError as e:
        return str(e).splitlines()[0].removeprefix("constraint.json_schema: ").removeprefix("constraint: ")
    return None


def accepts(constraint: GrammarConstraint, token_ids: Iterable[int]) -> bool:
    """Does ``constraint`` (a fresh one, from ``compile_constraint``: a copy of the cached compile)
    take ``token_ids`` one by one and end accepting?"""
    try:
        for token in token_ids:
            constraint.advance(token)  # raises on a token the grammar forbids
    except EngineError:
        return False
    return constraint.is_accepting()


# ---- the reference validator: jsonschema, with ECMA-262 regular expressions ----------------------

def reference_validator(schema: dict[str, Any], *, formats: bool) -> Any:
    """The reference: jsonschema with ECMA-262 regexes (``engine.constrained.ecma_validator``),
    formats asserted when ``formats``."""
    return ecma_validator(schema, formats=formats)


def reference_valid(validator: Any, instance: object) -> bool:
    return is_valid(validator, instance)


# ---- walking a schema's test instances ------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """One test instance: what the data says, what our matcher did, what the reference validator says."""

    key: tuple[str, str, str]
    """(file, schema description, test description) for the Test Suite; (file, "", index) for JSONSchemaBench."""
    expected: bool
    accepted: bool
    valid: bool
    text: str


@dataclass
class SchemaResult:
    """One schema: compiled or not, and the verdicts on its instances (none when not compiled)."""

    file: str
    description: str
    error: str | None
    """Why it did not compile; None when it did."""
    verdicts: list[Verdict]
    instances: int


def walk_schema(file: str, description: str, schema: object, tests: list[dict[str, Any]], tokenizer: Tokenizer,
                *, formats: bool, keys: list[tuple[str, str, str]]) -> SchemaResult:
    """Compile ``schema`` and walk each test instance (``keys``: theirs, in order) through a fresh matcher."""
    error = compile_error(schema, tokenizer) if isinstance(schema, dict) else \
        "a boolean schema: ConstraintSpec.json_schema takes a dict"
    result = SchemaResult(file, description, error, [], len(tests))
    if error is not None:
        return result
    assert isinstance(schema, dict)
    spec, validator = ConstraintSpec(json_schema=schema), reference_validator(schema, formats=formats)
    for key, test in zip(keys, tests, strict=True):
        text = dump(test["data"])
        accepted = accepts(compile_constraint(spec, tokenizer), encode(tokenizer, text))
        result.verdicts.append(Verdict(key, test["valid"], accepted,
                                       reference_valid(validator, test["data"]), text))
    return result


# ---- part 1: the JSON Schema Test Suite -----------------------------------------------------------

def walk_test_suite(tokenizer: Tokenizer, *, progress: bool = False) -> list[SchemaResult]:
    """Every schema of every draft 2020-12 file. Format assertion where the suite expects it
    (``optional/format/``); annotation elsewhere (draft 2020-12's default, as ``format.json`` tests)."""
    groups = [(path.relative_to(SUITE).as_posix(), group) for path in sorted(SUITE.rglob("*.json"))
              for group in json.loads(path.read_text())]
    results = []
    for file, group in tqdm(groups, desc="test suite", unit="schema", disable=not progress):
        keys = [(file, group["description"], test["description"]) for test in group["tests"]]
        results.append(walk_schema(file, group["description"], group["schema"], group["tests"], tokenizer,
                                   formats=file.startswith("optional/format/"), keys=keys))
    return results


# ---- part 2: JSONSchemaBench ----------------------------------------------------------------------

def jsb_files() -> list[Path]:
    """``<split>/<name>.json`` for every split, sorted."""
    return sorted(JSB.glob("*/*.json"))


def split_of(file: str) -> str:
    return file.split("/", 1)[0]


def walk_jsonschemabench(tokenizer: Tokenizer, files: list[Path] | None = None, *,
                         progress: bool = False) -> list[SchemaResult]:
    """Compile every schema and walk its instances; instance keys are (file, "", index)."""
    results = []
    for path in tqdm(files if files is not None else jsb_files(), desc="JSONSchemaBench", unit="schema",
                     disable=not progress):
        file = path.relative_to(JSB).as_posix()
        data = json.loads(path.read_text())
        keys = [(file, "", str(index)) for index in range(len(data["tests"]))]
        results.append(walk_schema(file, data.get("description", ""), data["schema"], data["tests"], tokenizer,
                                   formats=True, keys=keys))
    return results


@dataclass(frozen=True)
class Generated:
    file: str
    outcome: str
    """``valid``; ``invalid`` (completed, but not JSON or not valid: a bug); ``incomplete`` (hit
    max_new_tokens); ``failed`` (stopped with the grammar not accepting, e.g. a parser limit)."""
    text: str


def spread(files: list[str], limit: int) -> list[str]:
    """Up to ``limit`` of ``files`` (JSONSchemaBench paths), taken round-robin across the splits,
    each split in the given order."""
    by_split: dict[str, list[str]] = defaultdict(list)
    for file in files:
        by_split[split_of(file)].append(file)
    queues = [iter(v) for _, v in sorted(by_split.items())]
    picked: list[str] = []
    while queues and len(picked) < limit:
        for queue in list(queues):
            item = next(queue, None)
            if item is None:
                queues.remove(queue)
            elif len(picked) < limit:
                picked.append(item)
    return picked


def first_compiled(tokenizer: Tokenizer, per_split: int) -> list[str]:
    """The first ``per_split`` schemas of each split (file order) that compile: a fixed sample."""
    picked: list[str] = []
    by_split: dict[str, list[Path]] = defaultdict(list)
    for path in jsb_files():
        by_split[path.parent.name].append(path)
    for paths in by_split.values():
        compiled = (p for p in paths if compile_error(json.loads(p.read_text())["schema"], tokenizer) is None)
        picked += [p.relative_to(JSB).as_posix() for _, p in zip(range(per_split), compiled, strict=False)]
    return picked


def generate(engine: Engine, files: list[str], *, max_new_tokens: int, batch: int, temperature: float = 1.0,
             seed: int = 0, progress: bool = False) -> list[Generated]:
    """Generate one output under each schema (``files`` relative to JSONSchemaBench), ``batch``
    requests per ``engine.generate`` call, and judge it."""
    from engine import Request, SamplingParams

    assert engine.tokenizer is not None
    params = SamplingParams(temperature=temperature, seed=seed if temperature else None, max_new_tokens=max_new_tokens)
    schemas = {f: json.loads((JSB / f).read_text())["schema"] for f in files}
    out: list[Generated] = []
    bar = tqdm(total=len(files), desc="generate", unit="schema", disable=not progress)
    for start in range(0, len(files), batch):
        chunk = files[start:start + batch]
        requests = [Request(prompt="Output JSON:", params=params, constraint=ConstraintSpec(json_schema=schemas[f]))
                    for f in chunk]
        for file, output in zip(chunk, engine.generate(requests), strict=True):
            out.append(Generated(file, judge(engine, schemas[file], output), output.text))
        bar.update(len(chunk))
    bar.close()
    return out


def judge(engine: Engine, schema: dict[str, Any], output: Any) -> str:
    """``output``'s outcome (see ``Generated``): complete means ``stop`` with a fresh matcher
    accepting its tokens (EOS left out), and only complete outputs are parsed and validated."""
    assert engine.tokenizer is not None
    if output.finish_reason == "length":
        return "incomplete"
    ids = [t for t in output.token_ids if t not in engine.eos_token_ids]
    constraint = compile_constraint(ConstraintSpec(json_schema=schema), engine.tokenizer)
    if output.finish_reason != "stop" or not accepts(constraint, ids):
        return "failed"
    try:
        value = json.loads(output.text)
    except json.JSONDecodeError:
        return "invalid"
    return "valid" if reference_valid(reference_validator(schema, formats=True), value) else "invalid"


# ---- known differences ----------------------------------------------------------------------------

def load_known_differences() -> dict[str, Any]:
    return json.loads(KNOWN_DIFFERENCES.read_text())  # type: ignore[no-any-return]


def known_keys(entries: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(e["file"], e.get("schema", ""), str(e.get("test", e.get("index", "")))): e for e in entries}


def disagreements(results: list[SchemaResult]) -> list[Verdict]:
    return [v for r in results for v in r.verdicts if v.accepted != v.expected]


def violations(results: list[SchemaResult]) -> list[Verdict]:
    """The hard rule broken: accepted, yet the reference validator rejects it."""
    return [v for r in results for v in r.verdicts if v.accepted and not v.valid]


# ---- tables ---------------------------------------------------------------------------------------

def table(header: list[str], rows: list[list[object]]) -> str:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True))) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def instance_rows(results: list[SchemaResult], group: Callable[[str], str]) -> list[list[object]]:
    """Per group: schemas, compiled, instances, walked, agree, differ, accepted-but-invalid."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for r in results:
        c = counts[group(r.file)]
        c["schemas"] += 1
        c["compiled"] += r.error is None
        c["instances"] += r.instances
        c["walked"] += len(r.verdicts)
        c["agree"] += sum(v.accepted == v.expected for v in r.verdicts)
        c["bugs"] += sum(v.accepted and not v.valid for v in r.verdicts)
    total: Counter[str] = sum(counts.values(), Counter())
    keys = ["schemas", "compiled", "instances", "walked", "agree"]
    rows: list[list[object]] = [[name, *(c[k] for k in keys), c["walked"] - c["agree"], c["bugs"]]
                                for name, c in sorted(counts.items())]
    rows.append(["total", *(total[k] for k in keys), total["walked"] - total["agree"], total["bugs"]])
    return rows


INSTANCE_HEADER = ["", "schemas", "compiled", "instances", "walked", "agree", "differ", "accepted-invalid"]


def reasons_table(results: list[SchemaResult], top: int) -> str:
    reasons = Counter(_short(r.error) for r in results if r.error is not None)
    return table(["not compiled: reason", "schemas"], [[k, v] for k, v in reasons.most_common(top)])


_PLACE = r'(?:"" \(the root\)|\(place not found\)|/[^\s;,]*)'
_PLACES = re.compile(rf" at {_PLACE}(?:, {_PLACE})*(?: and \d+ more)?")
_GROUPS = ("Resource ", "$ref to ", "invalid regex ", "not a valid JSON Schema", "Failed to generate regex",
           "patternProperty regexes", "Expected positive integer", "Value for 'multipleOf'",
           "Value is not JSON serializable", "regex parse error", "Unable to determine if regex is empty",
           "circular references with sibling keys", "min/maxProperties only supported")


def _short(error: str) -> str:
    """The compiler's message without the specifics (places, URLs, numbers, regexes) that make
    every one unique, so that the reasons can be counted."""
    error = error.removeprefix("llguidance cannot compile it: ").split(" (llguidance:")[0]
    for prefix in _GROUPS:
        if error.startswith(prefix):
            return prefix.strip() + " ..."
    return _PLACES.sub("", error)[:90]


def generation_rows(results: list[SchemaResult], generated: list[Generated]) -> list[list[object]]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for r in results:
        counts[split_of(r.file)]["schemas"] += 1
        counts[split_of(r.file)]["compiled"] += r.error is None
    for g in generated:
        c = counts[split_of(g.file)]
        c["generated"] += 1
        c[g.outcome] += 1
    total: Counter[str] = sum(counts.values(), Counter())
    keys = ["schemas", "compiled", "generated"]

    def row(name: str, c: Counter[str]) -> list[object]:
        completed = c["valid"] + c["invalid"]
        return [name, *(c[k] for k in keys), completed, c["valid"], c["incomplete"], c["failed"]]

    return [row(n, c) for n, c in sorted(counts.items())] + [row("total", total)]


GENERATION_HEADER = ["split", "schemas", "compiled", "generated", "completed", "valid", "incomplete", "failed"]


# ---- the script -----------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--limit", type=int, default=320,
                        help="schemas to generate under, spread across the splits (default 320; 0: all)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="generation cap per output (default 256)")
    parser.add_argument("--batch", type=int, default=64, help="requests per engine.generate call (default 64)")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="sampling temperature, seeded (default 1.0; 0 is greedy, which loops inside strings more)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed of every request (default 0)")
    parser.add_argument("--skip-suite", action="store_true", help="skip the JSON Schema Test Suite")
    parser.add_argument("--skip-generation", action="store_true", help="compile and walk JSONSchemaBench only")
    args = parser.parse_args()

    from engine import Engine

    start = time.perf_counter()
    engine = Engine("demo", max_kv_tokens=max(8192, args.batch * (args.max_new_tokens + 64)))
    assert engine.tokenizer is not None
    tokenizer = engine.tokenizer
    print(f"engine and tokenizer loaded in {time.perf_counter() - start:.1f} s\n")
    known = load_known_differences()

    if not args.skip_suite:
        start = time.perf_counter()
        suite = walk_test_suite(tokenizer, progress=True)
        print(f"\nJSON Schema Test Suite, draft 2020-12 ({time.perf_counter() - start:.1f} s)\n")
        print(table(["file", *INSTANCE_HEADER[1:]], instance_rows(suite, lambda f: f)))
        print()
        print(reasons_table(suite, top=25))
        report(disagreements(suite), violations(suite), known_keys(known["json_schema_test_suite"]))

    start = time.perf_counter()
    jsb = walk_jsonschemabench(tokenizer, progress=True)
    print(f"\nJSONSchemaBench: compile and walk the instances ({time.perf_counter() - start:.1f} s)\n")
    print(table(["split", *INSTANCE_HEADER[1:]], instance_rows(jsb, split_of)))
    print()
    print(reasons_table(jsb, top=15))
    report(disagreements(jsb), violations(jsb), known_keys(known["jsonschemabench"]))

    if not args.skip_generation:
        compiled = [r.file for r in jsb if r.error is None]
        files = spread(compiled, args.limit or len(compiled))
        start = time.perf_counter()
        generated = generate(engine, files, max_new_tokens=args.max_new_tokens, batch=args.batch,
                             temperature=args.temperature, seed=args.seed, progress=True)
        elapsed = time.perf_counter() - start
        print(f"\nJSONSchemaBench: generation with the demo model ({len(files)} schemas, "
              f"{'greedy' if not args.temperature else f'temperature {args.temperature}'}, max_new_tokens "
              f"{args.max_new_tokens}, batch {args.batch}; {elapsed:.1f} s)\n")
        print(table(GENERATION_HEADER, generation_rows(jsb, generated)))
        for g in generated:
            if g.outcome == "invalid":
                print(f"BUG: completed output not valid under {g.file}: {g.text[:200]!r}")
            elif g.outcome == "failed":
                print(f"failed (stopped, grammar not accepting) under {g.file}: {g.text[:120]!r}")


def report(differ: list[Verdict], bugs: list[Verdict], known: dict[tuple[str, str, str], dict[str, Any]]) -> None:
    found = {v.key: v for v in differ if v not in bugs}  # the bugs are reported apart, below
    new, stale = sorted(set(found) - set(known)), sorted(set(known) - set(found))
    by_category = Counter(known[k]["category"] for k in found if k in known)
    print("\nknown differences by category: " + ", ".join(f"{k} {n}" for k, n in sorted(by_category.items())))
    for key in new:
        print(f"NEW difference (not in the known-differences file): {key} {found[key].text[:80]!r}")
    for key in stale:
        print(f"STALE known difference (no longer differs): {key}")
    for v in bugs:
        print(f"BUG: accepted but invalid: {v.key} {v.text[:80]!r}")


if __name__ == "__main__":
    main()
