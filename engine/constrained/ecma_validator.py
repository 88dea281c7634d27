"""jsonschema with ECMA-262 regular expressions: the referee that checks constrained outputs.

JSON Schema says ``pattern`` and ``patternProperties`` are ECMA-262 regexes. jsonschema runs them
with Python's ``re``, which differs where it matters for generated text: its ``\\d`` and ``\\w``
are Unicode, its ``\\s`` takes U+001C..U+001F and U+0085 but not U+FEFF, and it lacks ``\\p{..}``.
``ecma_validator`` swaps those keywords for versions that translate the pattern (``ecma_regex``) and
match with the ``regex`` module. ``engine/constrained/result.py`` checks every structured output
with it, and ``bench/constrained_suites.py`` uses it as the reference validator.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import jsonschema.validators
import regex

__all__ = ["ecma_regex", "ecma_validator", "is_valid"]

_ECMA_SPACE = "\\t\\n\\x0b\\x0c\\r \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
_ECMA_CLASSES = {"d": "0-9", "w": "A-Za-z0-9_", "s": _ECMA_SPACE}


@functools.cache
def ecma_regex(pattern: str) -> str:
    """``pattern`` (ECMA-262, as JSON Schema specifies) for the ``regex`` module: ``\\d`` and ``\\w``
    are ASCII-only and ``\\s`` is ECMA's whitespace (U+FEFF included); ``\\p{..}`` works as is."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            letter = pattern[i + 1]
            body = _ECMA_CLASSES.get(letter.lower())
            if body is None or (in_class and letter.isupper()):  # [\D] is left to the regex module
                out.append(pattern[i:i + 2])
            else:
                out.append(body if in_class else f"[{'^' if letter.isupper() else ''}{body}]")
            i += 2
            continue
        in_class = (in_class or char == "[") and not (in_class and char == "]")
        out.append(char)
        i += 1
    return "".join(out)


def _search(pattern: str, text: str) -> bool:
    return regex.search(ecma_regex(pattern), text) is not None


def _pattern(validator: Any, pattern: str, instance: object, schema: object) -> Iterator[jsonschema.ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):  # type: ignore[arg-type]
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any,
                        schema: object) -> Iterator[jsonschema.ValidationError]:
    if validator.is_type(instance, "object"):
        for pattern, subschema in patterns.items():
            for key, value in instance.items():
                if _search(pattern, key):
                    yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, extra: Any, instance: Any,
                           schema: dict[str, Any]) -> Iterator[jsonschema.ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    known, patterns = schema.get("properties", {}), schema.get("patternProperties", {})
    extras = [k for k in instance if k not in known and not any(_search(p, k) for p in patterns)]
    if validator.is_type(extra, "object"):
        for key in extras:
            yield from validator.descend(instance[key], extra, path=key)
    elif extra is False and extras:
        yield jsonschema.ValidationError(f"additional properties are not allowed ({extras!r} were unexpected)")


_ECMA_KEYWORDS = {"pattern": _pattern, "patternProperties": _pattern_properties,
                  "additionalProperties": _additional_properties}
_validator_classes: dict[type, Any] = {}



def ecma_validator(schema: dict[str, Any], *, formats: bool = False) -> Any:
    """jsonschema's validator for ``schema``'s ``$schema`` (draft 2020-12 when absent), with
    ``pattern``, ``patternProperties`` and ``additionalProperties`` matching regular expressions
    with ECMA-262 semantics (Python's ``re`` differs: Unicode ``\\d``/``\\w``, no ``\\p{..}``), and
    with format assertion when ``formats``. Formats without a checker installed pass (here:
    date-time, time, duration, hostname, uri, iri, uri-template need jsonschema's extras)."""
    base = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls = _validator_classes.get(base)
    if cls is None:
        cls = _validator_classes[base] = jsonschema.validators.extend(base, _ECMA_KEYWORDS)
    return cls(schema, format_checker=base.FORMAT_CHECKER if formats else None)


def is_valid(validator: Any, instance: object) -> bool:
    """``validator.is_valid(instance)``; False when a pattern cannot be compiled even by ``regex``
    (nothing proven valid)."""
    try:
        return bool(validator.is_valid(instance))
    except (regex.error, re.error):
        return False
