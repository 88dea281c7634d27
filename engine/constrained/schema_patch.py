"""Schema rewrites that close the gaps where llguidance accepts what JSON Schema rejects.

Constrained decoding must never emit a value that fails the schema (``Output.json`` is checked
again with jsonschema; a failure there is our bug). Two places where llguidance, as of 1.x, is
looser than the standard, found by walking the JSON Schema Test Suite (``bench/constrained_suites.py``):

- ``format: "date"`` / ``"date-time"``: its date regex takes February 29 in every year (RFC 3339
  allows it only in leap years). We add a leap-year-aware ``pattern`` beside the format.
- Regex ``\\s`` / ``\\S``: JSON Schema patterns are ECMA-262 regexes, whose ``\\s`` is a fixed set
  that includes U+FEFF and excludes U+0085; llguidance's (Rust's Unicode ``\\s``) is the reverse on
  both. We spell ECMA's set out.

``tighten`` returns a rewritten copy and leaves its argument alone. It walks only keywords whose
values are schemas, so ``const``, ``enum``, ``default`` and ``examples`` values are never touched.
"""

from __future__ import annotations

from typing import Any

_DAY = (r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29"
        r"|[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
        r"|02-(?:0[1-9]|1[0-9]|2[0-8]))")
"""A calendar date YYYY-MM-DD that exists (Gregorian leap years: every 4th, not centuries unless /400)."""

DATE_PATTERNS = {"date": f"^(?:{_DAY})$", "date-time": f"^(?:{_DAY})[Tt]"}
"""Added beside ``format``; the format's own regex still checks the rest (time, offset)."""

ECMA_SPACE = r"\t\n\x0B\f\r \x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}\x{FEFF}"
"""ECMA-262 WhiteSpace and LineTerminator, the members of its ``\\s``, as class contents."""

_ONE_SCHEMA = ("additionalProperties", "unevaluatedProperties", "items", "additionalItems", "unevaluatedItems",
               "contains", "propertyNames", "not", "if", "then", "else")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "dependentSchemas")


def tighten(schema: Any) -> Any:
    """``schema`` with the rewrites above applied to it and every subschema."""
    if not isinstance(schema, dict):
        return schema  # true / false, or something check_schema will refuse
    out = dict(schema)
    for key in _ONE_SCHEMA:
        if isinstance(out.get(key), dict):
            out[key] = tighten(out[key])
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [tighten(s) for s in out[key]]
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: tighten(s) for name, s in out[key].items()}
    if isinstance(out.get("patternProperties"), dict):
        out["patternProperties"] = {llguidance_regex(p) if isinstance(p, str) else p: tighten(s)
                                    for p, s in out["patternProperties"].items()}
    if isinstance(out.get("pattern"), str):
        out["pattern"] = llguidance_regex(out["pattern"])
    date = DATE_PATTERNS.get(out["format"]) if isinstance(out.get("format"), str) else None
    if date is not None:
        if "pattern" in out:  # both must hold: the date's pattern goes in an allOf
            existing = out.get("allOf", [])
            if isinstance(existing, list):
                out["allOf"] = [*existing, {"pattern": date}]
        else:
            out["pattern"] = date
    return out


def llguidance_regex(pattern: str) -> str:
    """``pattern`` with ``\\s`` and ``\\S`` meaning what ECMA-262 says (see the module docstring).
    Escaped backslashes are respected; ``\\S`` inside a character class is left alone."""
    if "\\s" not in pattern and "\\S" not in pattern:
        return pattern
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt == "s":
                out.append(ECMA_SPACE if in_class else f"[{ECMA_SPACE}]")
            elif nxt == "S" and not in_class:
                out.append(f"[^{ECMA_SPACE}]")
            else:
                out.append(pattern[i:i + 2])
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
        elif c == "]" and in_class and not _opens_class(out):
            in_class = False
        out.append(c)
        i += 1
    return "".join(out)


def _opens_class(out: list[str]) -> bool:
    """A ``]`` right after ``[`` or ``[^`` is a literal (``[]a]``), not the class's end."""
    return bool(out) and (out[-1] == "[" or (out[-1] == "^" and len(out) > 1 and out[-2] == "["))
