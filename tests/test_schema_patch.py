"""engine/constrained/schema_patch.py: the rewrites that make llguidance as strict as JSON Schema,
checked through the real matcher on the Qwen2.5 tokenizer and against jsonschema."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from engine.constrained.compiler import CompileCache, compile_constraint
from engine.constrained.schema_patch import llguidance_regex, tighten
from engine.constrained.spec import ConstraintSpec
from engine.demo import ASSETS
from engine.errors import EngineError
from engine.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def qwen() -> Tokenizer:
    return Tokenizer(ASSETS)  # the demo model's tokenizer: Qwen2.5's


def accepts(schema: dict, value: object, tok: Tokenizer) -> bool:
    constraint = compile_constraint(ConstraintSpec(json_schema=schema), tok, cache=CompileCache(4))
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    try:
        for token in tok.encode(text):
            constraint.advance(token)  # raises on a token the grammar forbids
    except EngineError:
        return False
    return constraint.is_accepting()


DATES = ["2024-02-29", "2000-02-29", "1600-02-29", "2021-02-29", "2100-02-29", "0100-02-29", "1900-02-29",
         "2023-04-31", "2023-04-30", "2023-12-31", "2023-13-01"]


@pytest.mark.parametrize("value", DATES)
def test_date_format_agrees_with_the_calendar(value: str, qwen: Tokenizer) -> None:
    schema = {"type": "string", "format": "date"}
    checker = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    assert accepts(schema, value, qwen) == checker.is_valid(value)


def test_date_time_rejects_a_missing_leap_day(qwen: Tokenizer) -> None:
    schema = {"type": "string", "format": "date-time"}
    assert accepts(schema, "2024-02-29T10:00:00Z", qwen)
    assert not accepts(schema, "2023-02-29T10:00:00Z", qwen)


def test_date_beside_an_existing_pattern_keeps_both(qwen: Tokenizer) -> None:
    schema = {"type": "string", "format": "date", "pattern": "^20"}
    assert accepts(schema, "2024-02-29", qwen)
    assert not accepts(schema, "2023-02-29", qwen)  # the date
    assert not accepts(schema, "1996-02-29", qwen)  # the pattern


def test_ecma_whitespace(qwen: Tokenizer) -> None:
    space = {"type": "string", "pattern": "^\\s$"}
    other = {"type": "string", "pattern": "^\\S$"}
    assert accepts(space, "\ufeff", qwen)  # ECMA-262 \s has U+FEFF
    assert not accepts(other, "\ufeff", qwen)
    assert not accepts(space, "\u0085", qwen)  # and not NEL
    assert accepts(other, "\u0085", qwen)
    assert accepts(other, "x", qwen) and not accepts(space, "x", qwen)
    assert accepts({"type": "string", "pattern": "^[\\sx]+$"}, "x\ufeff x", qwen)


def test_rewrites_reach_subschemas_and_spare_values() -> None:
    schema = {"type": "object",
              "properties": {"when": {"format": "date"}, "code": {"const": {"format": "date", "pattern": "\\s"}}},
              "patternProperties": {"^\\S+$": {"items": [{"pattern": "a\\sb"}]}},
              "$defs": {"d": {"anyOf": [{"format": "date-time"}]}},
              "enum": [{"pattern": "\\s"}]}
    before = copy.deepcopy(schema)
    out = tighten(schema)
    assert schema == before  # not mutated
    assert out["properties"]["when"]["pattern"].startswith("^(?:")
    assert out["properties"]["code"] == schema["properties"]["code"]  # a const value is data
    assert out["enum"] == schema["enum"]
    (key, sub), = out["patternProperties"].items()
    assert "\\S" not in key and "\\s" not in sub["items"][0]["pattern"]
    assert out["$defs"]["d"]["anyOf"][0]["pattern"].endswith("[Tt]")


def test_ecma_regex_respects_escapes_and_classes() -> None:
    assert llguidance_regex("a\\\\s") == "a\\\\s"  # an escaped backslash, then a plain s
    assert llguidance_regex("[^\\s]").startswith("[^\\t")  # inside a class: the members, no nested class
    assert llguidance_regex("[]\\s]").count("[") == 1
    assert llguidance_regex("\\d+") == "\\d+"
