"""The calculator tool: correctness against Python's own arithmetic, and refusal of everything else."""

from __future__ import annotations

import math
import random
import re

import pytest

from agentflow.tool import ToolContext, ToolError
from tools.calculator import MAX_EXPRESSION_CHARS, calculator, evaluate

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


CTX = ToolContext(run_id="r", node_id="n", attempt=1, call_id="c")


@pytest.mark.parametrize(("expression", "expected"), [
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("-2 ** 2", -4),
    ("(-2) ** 2", 4),
    ("2 ** 3 ** 2", 512),
    ("2 ** -1", 0.5),
    ("--3", 3),
    ("+-+3", -3),
    ("7 // 2", 3),
    ("-7 // 2", -4),
    ("7 % 3", 1),
    ("-7 % 3", 2),
    ("7 / 2", 3.5),
    ("6 / 3", 2.0),
    ("1.5e3 + 0.25", 1500.25),
    ("10 - 2 - 3", 5),
    ("2 ** 100", 2**100),
    ("abs(-3)", 3),
    ("round(2.567, 2)", 2.57),
    ("round(2.5)", 2),
    ("round(1234, -2)", 1200),
    ("round(5, -10 ** 3000)", 0),  # clamped: no 10**(10**3000) is ever built
    ("round(-5.5, -10 ** 9)", -0.0),
    ("round(5.25, 10 ** 9)", 5.25),
    ("min(3, 1.5, 2)", 1.5),
    ("max(3, 1.5, 2)", 3),
    ("max(7)", 7),
    ("sqrt(16)", 4.0),
    ("log(e)", 1.0),
    ("log(8, 2)", 3.0),
    ("log10(1000)", 3.0),
    ("log2(1024)", 10.0),
    ("exp(0)", 1.0),
    ("sin(0) + cos(0)", 1.0),
    ("tan(0)", 0.0),
    ("asin(1)", math.pi / 2),
    ("acos(1)", 0.0),
    ("atan(1)", math.pi / 4),
    ("atan2(1, 1)", math.pi / 4),
    ("floor(-2.5)", -3),
    ("ceil(2.1)", 3),
    ("factorial(10)", 3628800),
    ("factorial(5.0)", 120),
    ("hypot(3, 4)", 5.0),
    ("degrees(pi)", 180.0),
    ("radians(180)", math.pi),
    ("pi", math.pi),
    ("tau / 2", math.pi),
    ("e ** 2", math.e**2),
    ("  (3 + 4) * 2 ** 10 / sqrt(4)  ", 3584.0),
    ("+".join(["1"] * 400), 400),  # long left-associative chains cost no recursion depth
])
def test_correctness_table(expression: str, expected: float) -> None:
    result = evaluate(expression)
    assert result == expected
    assert type(result) is type(expected)


def test_factorial_at_the_limit_is_exact() -> None:
    assert evaluate("factorial(1000)") == math.factorial(1000)


def _random_expression(rng: random.Random, depth: int = 0) -> str:
    """An expression from a tiny grammar whose Python value our calculator must reproduce exactly."""
    if depth >= 4 or rng.random() < 0.3:
        if rng.random() < 0.7:
            return str(rng.randint(0, 20))
        return repr(round(rng.uniform(0, 20), 2))
    kind = rng.random()
    if kind < 0.15:
        return f"-{_random_expression(rng, depth + 1)}"
    if kind < 0.3:
        return f"({_random_expression(rng, depth + 1)})"
    if kind < 0.4:  # small, non-negative integer exponents: no complex numbers, no huge results
        return f"({_random_expression(rng, depth + 1)}) ** {rng.randint(0, 3)}"
    op = rng.choice(["+", "-", "*", "/", "//", "%"])
    return f"{_random_expression(rng, depth + 1)} {op} {_random_expression(rng, depth + 1)}"


def test_random_expressions_match_python() -> None:
    rng = random.Random(20240607)
    checked = divisions_by_zero = 0
    for _ in range(300):
        expression = _random_expression(rng)
        try:
            expected = eval(expression, {"__builtins__": {}}, {})  # the test's own oracle on its own strings
        except ZeroDivisionError:
            with pytest.raises(ToolError, match="division by zero"):
                evaluate(expression)
            divisions_by_zero += 1
            continue
        except OverflowError:
            with pytest.raises(ToolError):
                evaluate(expression)
            continue
        result = evaluate(expression)
        assert result == expected, expression
        assert type(result) is type(expected), expression
        checked += 1
    assert checked > 200 and divisions_by_zero > 0


@pytest.mark.parametrize(("expression", "message"), [
    ("__import__('os')", "unknown function '__import__'"),
    ("().__class__", "attribute access is not supported"),
    ("(1).real", "attribute access"),
    ("a", "unknown name 'a'"),
    ("pi.x", "attribute access"),
    ('"x" * 10', "string literals are not supported"),
    ("b'x'", "bytes literals"),
    ("[1, 2][0]", "subscripting is not supported"),
    ("lambda: 1", "lambda is not supported"),
    ("[x for x in (1, 2)]", "comprehension"),
    ("1 < 2", "comparison is not supported"),
    ("1 if 1 else 2", "conditional expression"),
    ("True + 1", "boolean literals"),
    ("1j", "complex number literals"),
    ("1 << 2", "operator LShift is not supported"),
    ("~1", "operator Invert is not supported"),
    ("sqrt(x=4)", "positional arguments only"),
    ("max(*(1, 2))", "starred arguments"),
    ("min()", "takes at least 1 argument, got 0"),
    ("atan2(1)", "takes 2 arguments, got 1"),
    ("sqrt(1, 2)", "takes 1 argument, got 2"),
    ("int(3)", "unknown function 'int'"),
    ("(lambda: 1)()", "only calls of named functions"),
    ("9**9**9", "would exceed 4000 digits"),
    ("2 ** 100000", "would exceed 4000 digits"),
    ("(10 ** 3000) * (10 ** 3000)", "would exceed 4000 digits"),
    ("factorial(10**6)", "factorial() of more than 1000 is refused"),
    ("factorial(-1)", "negative"),
    ("factorial(2.5)", "only accepts integers"),
    ("1 / 0", "division by zero"),
    ("1 // 0", "division by zero"),
    ("5 % 0", "division by zero"),
    ("0 ** -1", "division by zero"),
    ("1.0 / 0.0", "division by zero"),
    ("sqrt(-1)", "sqrt()"),
    ("log(0)", "log()"),
    ("asin(2)", "asin()"),
    ("(-8) ** 0.5", "complex number"),
    ("10.0 ** 400", "numeric overflow"),
    ("exp(1000)", "numeric overflow in exp()"),
    ("1e308 * 10", "not a finite number"),
    ("", "expression is empty"),
    ("1 +", "invalid syntax"),
    ("1\x00", "re:invalid syntax|could not be parsed"),
    ("1" * (MAX_EXPRESSION_CHARS + 1), "too long"),
    ("(" * 300 + "1" + ")" * 300, "re:too many nested parentheses|nested too deeply"),
    ("-" * 500 + "1", "nested too deeply"),
    ("2**" * 250 + "1", "nested too deeply"),
])
def test_refusals_are_tool_errors_with_clear_messages(expression: str, message: str) -> None:
    """``message`` is a literal part of the error, or a regular expression after ``re:``."""
    with pytest.raises(ToolError, match=message[3:] if message.startswith("re:") else re.escape(message)):
        evaluate(expression)


def test_errors_name_the_position_and_snippet() -> None:
    with pytest.raises(ToolError, match=r"division by zero \(in '/'\) at column 5: '1/0'"):
        evaluate("2 + 1/0")
    with pytest.raises(ToolError, match=r"unknown name 'x' .* at column 7: 'x'"):
        evaluate("1 + 2*x")


async def test_the_tool_returns_the_plain_number() -> None:
    assert calculator.name == "calculator"
    assert calculator.side_effects is False
    assert calculator.parameters["required"] == ["expression"]
    assert "Python syntax" in calculator.parameters["properties"]["expression"]["description"]
    assert await calculator.call({"expression": "1+2"}, CTX) == 3
    assert await calculator.call({"expression": "2 ** 0.5"}, CTX) == math.sqrt(2)


async def test_the_tool_fails_once_without_retrying() -> None:
    with pytest.raises(ToolError, match="division by zero"):
        await calculator.call({"expression": "1/0"}, CTX)
    assert calculator.retry_policy.max_attempts == 1
