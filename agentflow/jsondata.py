"""What a value must be to travel as JSON through agentflow: stored, streamed, sent to a model.

Python's ``json`` module reads more than JSON: ``NaN``, ``Infinity`` and ``1e999`` (an infinite
float), and ``"\\ud800"``, a string holding half of a UTF-16 surrogate pair, which no UTF-8 encoder
can write. Both come back to bite later, far from the request that brought them: a row the store
cannot serialise, a listing that fails for every reader, a run that fails at its checkpoint. So
values from outside (request bodies, webhook payloads, workflow files) are checked at the door with
:func:`json_problem`, and refused there with the place of the problem.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["dumps", "finite", "has_lone_surrogate", "json_problem", "loads", "without_surrogates"]


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def json_problem(value: Any, pointer: str = "") -> tuple[str, str] | None:
    """The first place in ``value`` that JSON cannot carry, as ``(json_pointer, what is wrong)``, or None.

    Looks for non-finite floats and strings (values or keys) with lone surrogates. Walks without
    recursion, so a deeply nested value is no problem here."""
    stack: list[tuple[str, Any]] = [(pointer, value)]
    while stack:
        where, item = stack.pop()
        kind = type(item)
        if kind is float:
            if not math.isfinite(item):
                return where, f"{item!r} is not a JSON number (numbers must be finite)"
        elif kind is str:
            if not item.isascii() and has_lone_surrogate(item):
                return where, "the string holds a lone UTF-16 surrogate (half of a pair), which is not Unicode text"
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                if isinstance(key, str) and not key.isascii() and has_lone_surrogate(key):
                    return where, "a key holds a lone UTF-16 surrogate (half of a pair), which is not Unicode text"
                stack.append((f"{where}/{_escape(str(key))}", child))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{where}/{i}", child) for i, child in reversed(list(enumerate(item))))
        elif isinstance(item, float) and not math.isfinite(item):
            return where, f"{item!r} is not a JSON number (numbers must be finite)"
    return None


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone UTF-16 surrogate, so cannot be encoded as UTF-8 (JSON escapes and
    ``surrogateescape``-decoded file names bring them)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def loads(text: str | bytes) -> Any:
    """Parse JSON and nothing more: ``NaN``, ``Infinity`` and numbers too large for a float (``1e999``)
    raise ``ValueError``, as they do for every other JSON reader."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (numbers must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±Infinity) replaced by None, as JSON writers in
    JavaScript and pydantic do; containers are copied only where something changed."""
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        out = {k: finite(v) for k, v in value.items()}
        return out if any(out[k] is not v for k, v in value.items()) else value
    if isinstance(value, (list, tuple)):
        items = [finite(v) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def without_surrogates(value: Any) -> Any:
    """``value`` (JSON data) with every lone surrogate in its strings and keys replaced by U+FFFD, as UTF-8
    text must have it (``surrogateescape``-decoded file names bring them); copied only where something changed."""
    kind = type(value)
    if kind is str:
        return value if value.isascii() or not has_lone_surrogate(value) else _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        out = {without_surrogates(k): without_surrogates(v) for k, v in value.items()}
        changed = len(out) != len(value) or any(k not in value or out[k] is not value[k] for k in out)
        return out if changed else value
    if isinstance(value, (list, tuple)):
        items = [without_surrogates(v) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


def dumps(value: Any, **options: Any) -> str:
    """``json.dumps`` that always writes JSON: a value holding NaN or ±Infinity is written with null in their
    place (the fast path, a value without them, is written as it is)."""
    try:
        return json.dumps(value, allow_nan=False, **options)
    except ValueError:
        return json.dumps(finite(value), allow_nan=False, **options)
