"""agentflow.jsondata: what travels as JSON. Strict reading (no NaN, Infinity or 1e999), non-finite
floats written as null, and the places where a run's values meet JSON: tool results, model output."""

from __future__ import annotations

import json
import math

import pytest

from agentflow import jsondata
from agentflow.dsl.ir import LLMNode
from agentflow.runtime.errors import OutputError
from agentflow.runtime.nodes import check_output, jsonable


@pytest.mark.parametrize("text", ['{"x": NaN}', "[Infinity]", "-Infinity", '{"x": 1e999}', "[-1e400]"])
def test_loads_refuses_what_python_reads_but_json_does_not_have(text: str) -> None:
    assert json.loads(text) is not None  # Python's reader takes it...
    with pytest.raises(ValueError):  # ...a JSON reader does not
        jsondata.loads(text)


def test_loads_reads_json() -> None:
    text = '{"a": [1, 2.5, -3e10, 1e308, "x", null, true], "b": {"c": 0.1}}'
    assert jsondata.loads(text) == json.loads(text)


def test_finite_replaces_non_finite_floats_and_keeps_what_it_does_not_change() -> None:
    clean = {"a": [1, 2.5, "nan"], "b": {"c": None}}
    assert jsondata.finite(clean) is clean
    dirty = {"a": [1, math.nan, (math.inf, 2.0)], "b": {"c": -math.inf}, "d": clean}
    out = jsondata.finite(dirty)
    assert out == {"a": [1, None, [None, 2.0]], "b": {"c": None}, "d": clean}
    assert out["d"] is clean and math.isnan(dirty["a"][1])  # the input is left alone


def test_dumps_always_writes_json() -> None:
    assert json.loads(jsondata.dumps({"x": math.nan, "y": [math.inf, 1]})) == {"x": None, "y": [None, 1]}
    assert jsondata.dumps({"x": 1.5}, separators=(",", ":")) == '{"x":1.5}'


def test_tool_results_that_json_cannot_carry_become_null() -> None:
    class Point:
        def __str__(self) -> str:
            return "P(1, 2)"

    assert jsonable(math.nan) is None and jsonable(-math.inf) is None and jsonable(2.5) == 2.5
    assert jsonable({"mean": math.nan, "xs": (1.0, math.inf), "p": Point(), "s": {3}}) == {
        "mean": None, "xs": [1.0, None], "p": "P(1, 2)", "s": [3]}


@pytest.mark.parametrize("text", ['{"score": NaN}', '{"score": Infinity}', '{"score": 1e999}'])
def test_model_json_with_non_finite_numbers_is_not_valid_output(text: str) -> None:
    node = LLMNode(id="rate", kind="llm", prompt="Rate it", output_schema={"type": "object"})
    with pytest.raises(OutputError, match="not valid JSON"):
        check_output(node, text, "rate")
    assert check_output(node, '{"score": 0.5}', "rate") == {"score": 0.5}
