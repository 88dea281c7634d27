"""Acceptance of schema-constrained decoding on real data (``../shared/data``): the JSON Schema Test
Suite (draft 2020-12 with ``optional/``) and JSONSchemaBench, walked instance by instance through
fresh matchers, and a fixed sample of JSONSchemaBench schemas generated under with the demo model.

Two rules. (1) Hard: an instance or output the matcher accepts passes the reference validator
(jsonschema with ECMA-262 patterns); nothing may excuse a break. (2) Where the matcher and the
data disagree otherwise, the disagreement is listed with its reason in
``tests/data/jsonschema_known_differences.json``, exactly: a new one fails, and so does a stale
entry. The harness is ``bench/constrained_suites.py``, which runs all of it with the tables.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from bench.constrained_suites import (
    JSB,
    SUITE,
    SchemaResult,
    Verdict,
    disagreements,
    dump,
    first_compiled,
    generate,
    jsb_files,
    known_keys,
    load_known_differences,
    reference_validator,
    violations,
    walk_jsonschemabench,
    walk_test_suite,
)
from engine import Engine
from engine.constrained.compiler import JSON_OPTIONS
from engine.constrained.ecma_validator import ecma_regex
from engine.demo import ASSETS
from engine.tokenizer import Tokenizer

pytestmark = pytest.mark.skipif(not SUITE.is_dir(), reason=f"no test data at {SUITE.parents[2]}")

KNOWN = load_known_differences()


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(ASSETS)  # the demo model's tokenizer: Qwen2.5's


@pytest.fixture(scope="module")
def suite(tokenizer: Tokenizer) -> list[SchemaResult]:
    return walk_test_suite(tokenizer)


def check_against_known(results: list[SchemaResult], entries: list[dict[str, Any]]) -> None:
    """Disagreements that keep the hard rule are exactly the listed ones, each in the listed direction."""
    bugs = {v.key for v in violations(results)}
    found = {v.key: v for v in disagreements(results) if v.key not in bugs}
    known = known_keys(entries)
    new = [f"{k}: expected {'valid' if found[k].expected else 'invalid'}, text {found[k].text[:80]!r}"
           for k in sorted(set(found) - set(known))]
    stale = sorted(set(known) - set(found))
    assert not new, "new disagreements, not in the known-differences file:\n" + "\n".join(new)
    assert not stale, f"stale known differences (they agree now, or no longer compile): {stale}"
    categories = KNOWN["categories"]
    for key, entry in known.items():
        ours = "accepted" if found[key].accepted else "rejected"
        assert (entry["ours"], entry["category"] in categories, bool(entry["reason"])) == (ours, True, True), key


def describe(bugs: list[Verdict]) -> str:
    return "\n".join(f"{v.key}: {v.text[:100]!r}" for v in bugs)


def test_instances_are_written_as_the_grammar_writes_json() -> None:
    assert (JSON_OPTIONS["item_separator"], JSON_OPTIONS["key_separator"]) == (", ", ": ")
    assert not JSON_OPTIONS["whitespace_flexible"]
    assert dump({"a": [1, 2.0, 1e308, 1.5e-7], "b": "é\n"}) == '{"a": [1, 2.0, 1e+308, 1.5e-07], "b": "é\\n"}'


def test_reference_validator_uses_ecma_regexes() -> None:
    assert ecma_regex(r"^\d+\W[\w-]\s$") == r"^[0-9]+[^A-Za-z0-9_][A-Za-z0-9_-]" + ecma_regex(r"\s") + "$"
    validator = reference_validator({"pattern": r"^\S$", "patternProperties": {r"\p{Letter}": {"type": "null"}},
                                     "additionalProperties": False}, formats=False)
    assert [validator.is_valid(x) for x in ("\u07c0", "\ufeff", {"é": None}, {"é": 1}, {"1": None})] == \
        [True, False, True, False, False]


def test_suite_disagreements_are_the_known_differences(suite: list[SchemaResult]) -> None:
    check_against_known(suite, KNOWN["json_schema_test_suite"])


def test_suite_reference_validator_agrees_with_the_suite(suite: list[SchemaResult]) -> None:
    """The reference is trustworthy where it matters: it matches every expected verdict, except for
    formats jsonschema has no checker for here (they pass), which only weakens the hard rule."""
    wrong = [v for r in suite for v in r.verdicts if v.valid != v.expected]
    assert all(v.key[0].startswith("optional/format/") and v.valid for v in wrong), describe(wrong)


def test_suite_accepted_instances_are_valid(suite: list[SchemaResult]) -> None:
    bugs = violations(suite)
    assert not bugs, "the matcher accepts instances the reference validator rejects:\n" + describe(bugs)


def test_suite_compiles_most_schemas(suite: list[SchemaResult]) -> None:
    """The counts the bench prints; a drop means the compiler (or llguidance) refuses more than it did."""
    counts = Counter("compiled" if r.error is None else "refused" for r in suite)
    assert counts["compiled"] >= 210 and sum(len(r.verdicts) for r in suite) >= 1170, counts
    assert all(r.error for r in suite if r.file == "refRemote.json")  # remote $refs are never fetched


JSB_SAMPLE_STEP = 4
"""The suite walks every fourth JSONSchemaBench schema (the whole set takes minutes on a small CI machine;
``python -m bench.constrained_suites --skip-generation`` walks all of it) plus every schema with a listed
difference."""


@pytest.mark.slow
def test_jsonschemabench_instances(tokenizer: Tokenizer) -> None:
    """A fixed quarter of the schemas, compiled: accepted instances are valid; disagreements are the listed
    ones; most schemas compile."""
    listed = {e["file"] for e in KNOWN["jsonschemabench"]}
    files = [path for i, path in enumerate(jsb_files())
             if i % JSB_SAMPLE_STEP == 0 or path.relative_to(JSB).as_posix() in listed]
    results = walk_jsonschemabench(tokenizer, files)
    assert len(results) >= 5502 // JSB_SAMPLE_STEP and {r.file for r in results} >= listed
    bugs = violations(results)
    assert not bugs, "the matcher accepts instances the reference validator rejects:\n" + describe(bugs)
    check_against_known(results, KNOWN["jsonschemabench"])
    assert sum(r.error is None for r in results) >= 1120  # about 1,150 compile today


@pytest.mark.slow
def test_jsonschemabench_generation_sample(demo_path: object, tokenizer: Tokenizer) -> None:
    """The first compiled schema of each split (20 schemas), seeded sampling with the demo model's
    random weights, 128 new tokens at most: every completed output parses and validates. Outputs
    that hit the cap (a random model often wanders inside a string) are counted, not judged."""
    engine = Engine("demo", max_kv_tokens=8192)
    files = first_compiled(engine.tokenizer or tokenizer, per_split=1)
    outcomes = generate(engine, files, max_new_tokens=128, batch=len(files), temperature=1.0, seed=0)
    counts = Counter(g.outcome for g in outcomes)
    bad = [(g.file, g.outcome, g.text[:120]) for g in outcomes if g.outcome in ("invalid", "failed")]
    assert not bad, json.dumps(bad, ensure_ascii=False, indent=1)
    assert len(files) == 20 and counts["valid"] >= 5, counts
