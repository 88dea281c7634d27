"""The ``calculator`` tool: arithmetic on a safe subset of Python expression syntax.

The expression is parsed with :func:`ast.parse` and evaluated by walking an allowlist of node
types; nothing is ever passed to ``eval`` or ``exec``. Allowed:

* numbers: ``int`` and ``float`` literals (no complex, no booleans, no strings);
* unary ``+`` / ``-``; binary ``+ - * / // % **``; parentheses;
* the constants ``pi``, ``e`` and ``tau``;
* calls (positional arguments only) to ``abs round min max sqrt log log10 log2 exp sin cos tan asin
  acos atan atan2 floor ceil factorial hypot degrees radians`` (``log(x)`` or ``log(x, base)``).

Anything else (names, attributes, subscripts, keyword or starred arguments, lambdas,
comprehensions, comparisons ...) is refused with a :class:`~agentflow.tool.ToolError` naming the
column and the offending text. So are inputs that would burn CPU or memory: expressions over
:data:`MAX_EXPRESSION_CHARS` characters, over :data:`MAX_NODES` syntax nodes or nested deeper than
:data:`MAX_DEPTH`, integers beyond :data:`MAX_INT_DIGITS` digits (checked *before* a ``*`` or
``**`` is computed, so ``9**9**9`` fails at once) and ``factorial`` of more than
:data:`MAX_FACTORIAL`. Division by zero, math domain errors, overflow and complex or non-finite
results are errors too.

The tool returns the plain number: an ``int`` when the arithmetic was exact integer arithmetic
(``7 // 2`` -> ``3``, ``2**100``), a ``float`` otherwise (``7 / 2`` -> ``3.5``, ``sqrt(4)`` -> ``2.0``),
exactly what Python itself would compute for the same expression.
"""

from __future__ import annotations

import ast
import logging
import math
import operator
from collections.abc import Callable
from typing import Any

from agentflow.tool import ToolError, ToolRetry, tool

log = logging.getLogger(__name__)

MAX_EXPRESSION_CHARS = 1000
"""Longest expression accepted, in characters."""
MAX_NODES = 1000
"""Most syntax-tree nodes (numbers, names, operations, calls) in one expression."""
MAX_DEPTH = 200
"""Deepest nesting of the syntax tree. Parentheses alone add no depth, nor does a left-associative chain
such as ``1 + 2 + 3 + ...``; unary operators, the right operands of binary ones and calls do."""
MAX_INT_DIGITS = 4000
"""Largest integer (in decimal digits) any step may produce; below Python's 4300-digit limit on
converting integers to text, so every result can be printed and serialised."""
MAX_FACTORIAL = 1000
"""Largest argument of ``factorial`` (1000! has 2568 digits)."""

_MAX_INT_BITS = math.ceil(MAX_INT_DIGITS * math.log2(10))

Number = int | float

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_SYMBOL: dict[type[ast.operator], str] = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/",
                                          ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**"}


def _factorial(x: Number) -> int:
    if isinstance(x, float):
        if not x.is_integer():
            raise ValueError("factorial() only accepts integers")
        x = int(x)
    if x < 0:
        raise ValueError("factorial() is not defined for negative numbers")
    if x > MAX_FACTORIAL:
        raise _Refused(f"factorial() of more than {MAX_FACTORIAL} is refused (too large)")
    return math.factorial(x)


def _round(x: Number, ndigits: Number | None = None) -> Number:
    if ndigits is None:
        return round(x)
    if not isinstance(ndigits, int):
        raise ValueError("round() needs an integer number of digits")
    # round(5, -10**9) would build 10**(10**9). Past the largest number we allow, more digits change
    # nothing (everything rounds to itself or to 0), so clamp.
    limit = MAX_INT_DIGITS + 2
    return round(x, max(-limit, min(limit, ndigits)))


def _min(*args: Number) -> Number:
    return min(args)


def _max(*args: Number) -> Number:
    return max(args)


def _log(x: Number, base: Number | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int | None]] = {
    # name: (function, fewest arguments, most arguments or None for no limit)
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "min": (_min, 1, None),
    "max": (_max, 1, None),
    "sqrt": (math.sqrt, 1, 1),
    "log": (_log, 1, 2),
    "log10": (math.log10, 1, 1),
    "log2": (math.log2, 1, 1),
    "exp": (math.exp, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
    "asin": (math.asin, 1, 1),
    "acos": (math.acos, 1, 1),
    "atan": (math.atan, 1, 1),
    "atan2": (math.atan2, 2, 2),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "factorial": (_factorial, 1, 1),
    "hypot": (math.hypot, 1, None),
    "degrees": (math.degrees, 1, 1),
    "radians": (math.radians, 1, 1),
}
"""The functions an expression may call, with their arity."""


class _Refused(Exception):
    """A resource guard tripped inside a function (turned into a ToolError with the position)."""


class _Evaluator:
    def __init__(self, expression: str) -> None:
        self.expression = expression

    def fail(self, node: ast.AST, problem: str) -> ToolError:
        """A ToolError naming the problem and where in the expression it is."""
        col = getattr(node, "col_offset", None)
        segment = ast.get_source_segment(self.expression, node) if col is not None else None
        if col is None or segment is None:
            return ToolError(f"calculator: {problem}")
        if len(segment) > 60:
            segment = segment[:57] + "..."
        return ToolError(f"calculator: {problem} at column {col + 1}: {segment!r}")

    def eval(self, node: ast.AST) -> Number:
        if isinstance(node, ast.Expression):
            return self.eval(node.body)
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return value
            kind = {bool: "boolean", str: "string", bytes: "bytes", complex: "complex number"}.get(
                type(value), type(value).__name__)
            raise self.fail(node, f"{kind} literals are not supported (only int and float numbers)")
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return -self.eval(node.operand)
            if isinstance(node.op, ast.UAdd):
                return +self.eval(node.operand)
            raise self.fail(node, f"operator {type(node.op).__name__} is not supported (only unary + and -)")
        if isinstance(node, ast.BinOp):
            return self.binary(node)
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            raise self.fail(node, f"unknown name {node.id!r} (constants: {', '.join(CONSTANTS)}; "
                                  "variables are not supported)")
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.fail(node, f"{_describe(node)} is not supported")

    def binary(self, node: ast.BinOp) -> Number:
        # A left-associative chain (1 + 2 + 3 + ...) is walked in a loop, not by recursion, so long
        # sums and products cost no stack depth.
        spine: list[ast.BinOp] = []
        current: ast.expr = node
        while isinstance(current, ast.BinOp):
            spine.append(current)
            current = current.left
        value = self.eval(current)
        for step in reversed(spine):
            value = self.apply(step, value, self.eval(step.right))
        return value

    def apply(self, node: ast.BinOp, left: Number, right: Number) -> Number:
        op = type(node.op)
        if op not in _BINARY:
            raise self.fail(node, f"operator {type(node.op).__name__} is not supported (only + - * / // % **)")
        symbol = _SYMBOL[op]
        if isinstance(left, int) and isinstance(right, int):
            if op is ast.Mult and left.bit_length() + right.bit_length() > _MAX_INT_BITS + 1:
                raise self.fail(node, f"result of '*' would exceed {MAX_INT_DIGITS} digits")
            if op is ast.Pow and right > 0 and abs(left) > 1 and (right > _MAX_INT_BITS or
                                                                  right * math.log10(abs(left)) > MAX_INT_DIGITS):
                raise self.fail(node, f"result of '**' would exceed {MAX_INT_DIGITS} digits")
        try:
            result = _BINARY[op](left, right)
        except ZeroDivisionError:
            raise self.fail(node, f"division by zero (in '{symbol}')") from None
        except OverflowError:
            raise self.fail(node, f"numeric overflow (in '{symbol}')") from None
        return self.check(node, result)

    def call(self, node: ast.Call) -> Number:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node, "only calls of named functions are supported (e.g. sqrt(2))")
        name = node.func.id
        if name not in FUNCTIONS:
            raise self.fail(node.func, f"unknown function {name!r} (available: {', '.join(FUNCTIONS)})")
        if node.keywords:
            raise self.fail(node, f"{name}() takes positional arguments only")
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise self.fail(node, f"{name}(): starred arguments are not supported")
        fn, fewest, most = FUNCTIONS[name]
        count = len(node.args)
        if count < fewest or (most is not None and count > most):
            wanted = str(fewest) if fewest == most else f"{fewest} to {most}" if most else f"at least {fewest}"
            plural = "" if wanted.endswith(("at least 1", "to 1")) or wanted == "1" else "s"
            raise self.fail(node, f"{name}() takes {wanted} argument{plural}, got {count}")
        args = [self.eval(arg) for arg in node.args]
        try:
            result = fn(*args)
        except ZeroDivisionError:
            raise self.fail(node, f"division by zero in {name}()") from None
        except OverflowError:
            raise self.fail(node, f"numeric overflow in {name}()") from None
        except _Refused as e:
            raise self.fail(node, str(e)) from None
        except (ValueError, TypeError) as e:
            message = str(e)
            if message == "math domain error":
                message = f"argument outside the domain of {name}()"
            raise self.fail(node, message) from None
        return self.check(node, result)

    def check(self, node: ast.AST, value: Any) -> Number:
        if isinstance(value, complex):
            raise self.fail(node, "the result is a complex number (not supported)")
        if isinstance(value, int) and not isinstance(value, bool):
            if value.bit_length() > _MAX_INT_BITS:
                raise self.fail(node, f"intermediate result exceeds {MAX_INT_DIGITS} digits")
            return value
        if isinstance(value, float):
            return value
        raise self.fail(node, f"unexpected result of type {type(value).__name__}")  # pragma: no cover


def _describe(node: ast.AST) -> str:
    names = {ast.Attribute: "attribute access", ast.Subscript: "subscripting", ast.Lambda: "lambda",
             ast.Compare: "comparison", ast.BoolOp: "and/or", ast.IfExp: "conditional expression",
             ast.List: "list", ast.Tuple: "tuple", ast.Dict: "dict", ast.Set: "set",
             ast.ListComp: "comprehension", ast.SetComp: "comprehension", ast.DictComp: "comprehension",
             ast.GeneratorExp: "generator expression", ast.JoinedStr: "f-string", ast.NamedExpr: "assignment",
             ast.Await: "await", ast.Starred: "starred expression"}
    return names.get(type(node), f"syntax {type(node).__name__}")


def _check_shape(tree: ast.AST) -> None:
    """Refuse trees over MAX_NODES nodes or deeper than MAX_DEPTH (iteratively: no recursion on input depth)."""
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ToolError(f"calculator: expression is too complex (more than {MAX_NODES} syntax nodes)")
        if depth > MAX_DEPTH:
            raise ToolError(f"calculator: expression is nested too deeply (more than {MAX_DEPTH} levels)")
        if isinstance(node, ast.BinOp):  # the left operand continues a chain evaluated in a loop: no deeper
            stack.extend(((node.left, depth), (node.right, depth + 1)))
        else:  # operators and load contexts are markers, not nodes worth counting
            stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node)
                         if not isinstance(child, (ast.unaryop, ast.expr_context)))


def evaluate(expression: str) -> Number:
    """Evaluate an arithmetic expression (the grammar is in this module's docstring).

    Raises:
        ToolError: the expression is malformed, uses something not allowed, trips a resource
            guard, or fails arithmetically (division by zero, domain error, overflow).
    """
    if not isinstance(expression, str):
        raise ToolError(f"calculator: expression must be a string, got {type(expression).__name__}")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"calculator: expression is too long ({len(expression)} characters; "
                        f"the limit is {MAX_EXPRESSION_CHARS})")
    if not expression.strip():
        raise ToolError("calculator: expression is empty")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        where = f" at column {e.offset}" if e.offset else ""
        raise ToolError(f"calculator: invalid syntax{where}: {e.msg}") from None
    except (ValueError, MemoryError, RecursionError) as e:  # NUL bytes; parser stack exhaustion
        raise ToolError(f"calculator: expression could not be parsed ({type(e).__name__}: {e})") from None
    _check_shape(tree)
    evaluator = _Evaluator(expression.strip())
    result = evaluator.eval(tree)
    if isinstance(result, float) and not math.isfinite(result):
        raise ToolError(f"calculator: the result is not a finite number ({result!r})")
    log.debug("calculator: %s = %r", expression, result)
    return result


@tool(name="calculator", side_effects=False, retry=ToolRetry(max_attempts=1))
def calculator(expression: str) -> int | float:
    """Evaluate an arithmetic expression exactly and return the number.

    Supports + - * / // % ** and parentheses, the constants pi, e and tau, and the functions abs,
    round, min, max, sqrt, log (log(x) or log(x, base)), log10, log2, exp, sin, cos, tan, asin, acos,
    atan, atan2, floor, ceil, factorial, hypot, degrees and radians (angles in radians). Integer
    arithmetic is exact (2**100 gives every digit); / always gives a float. No variables.

    Args:
        expression: The expression, in Python syntax, e.g. "(3 + 4) * 2 ** 10 / sqrt(2)".
    """
    return evaluate(expression)


__all__ = ["CONSTANTS", "FUNCTIONS", "MAX_EXPRESSION_CHARS", "calculator", "evaluate"]
