"""Say what is wrong with a JSON Schema, and where (an RFC 6901 JSON pointer into the schema).

Two checks, in the order ``compiler.compile_constraint`` runs them:

1. ``check_schema``: the schema against its metaschema (the draft its ``$schema`` names, else 2020-12),
   with the ``jsonschema`` package. Formats are not asserted: a ``pattern`` is an ECMA-262 regex that
   Python's ``re`` may reject (``\\p{L}``), and llguidance judges regexes itself. Draft 2020-12 is
   checked against ``flat_metaschema_2020_12``, the same rules in one document: jsonschema resolves
   the official one's ``$dynamicRef`` and seven vocabulary ``$ref``s at every subschema, which makes
   it ~6x slower (0.6 s for a 2,000-property object, in Python, holding the GIL).
2. ``explain_llguidance_error``: llguidance refused a schema the metaschema accepts. Its messages say
   what (``Unimplemented keys: ["uniqueItems"]``) but not where; we find where by walking the schema's
   subschemas (``iter_schemas``) for the keyword, format, ``$ref`` or regex it names.

Pure Python, no llguidance at import (``explain_llguidance_error`` imports it to test regexes).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidRequestError

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

__all__ = ["check_schema", "explain_llguidance_error", "find_keyword", "flat_metaschema_2020_12", "iter_schemas",
           "json_pointer"]

log = logging.getLogger(__name__)

_SCHEMA_VALUED = frozenset({"additionalItems", "additionalProperties", "contains", "contentSchema", "else", "if",
                            "items", "not", "propertyNames", "then", "unevaluatedItems", "unevaluatedProperties"})
"""Keywords whose value is one subschema (every draft from 4 to 2020-12)."""
_SCHEMA_MAPS = frozenset({"$defs", "definitions", "dependencies", "dependentSchemas", "patternProperties",
                          "properties"})
"""Keywords whose value maps names to subschemas (``dependencies`` may also map to lists of names)."""
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "items", "oneOf", "prefixItems"})
"""Keywords whose value is a list of subschemas (``items`` as a list is draft 4 to 2019-09)."""
_MAX_PLACES = 3
"""Places named per problem; more are counted."""


def json_pointer(path: Any) -> str:
    """The RFC 6901 pointer of a path of keys and indices (``~`` is written ``~0``, ``/`` is ``~1``)."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def _where(pointer: str) -> str:
    return pointer if pointer else '"" (the root)'


def iter_schemas(schema: object) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object in ``schema`` (itself included) with its JSON pointer, in document order.
    Values that are data, not schemas (``enum``, ``const``, ``default``, ``examples``, a property's
    *name*), are not entered, so a property named ``uniqueItems`` is not mistaken for the keyword."""
    stack: list[tuple[str, object]] = [("", schema)]
    while stack:
        pointer, node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield pointer, node
        children: list[tuple[str, object]] = []
        for key, value in node.items():
            here = pointer + json_pointer([key])
            if key in _SCHEMA_VALUED and isinstance(value, dict):
                children.append((here, value))
            elif key in _SCHEMA_MAPS and isinstance(value, dict):
                children.extend((here + json_pointer([name]), sub) for name, sub in value.items())
            elif key in _SCHEMA_LISTS and isinstance(value, list):
                children.extend((here + json_pointer([i]), sub) for i, sub in enumerate(value))
        stack.extend(reversed(children))  # popped in document order


def find_keyword(schema: object, keyword: str) -> list[str]:
    """Pointers of the schema objects that use ``keyword``."""
    return [pointer for pointer, node in iter_schemas(schema) if keyword in node]


def check_schema(schema: dict[str, Any], *, field: str) -> None:
    """Raise ``InvalidRequestError`` (message: the JSON pointer and what is wrong there) when
    ``schema`` is not valid against its metaschema."""
    from jsonschema.exceptions import best_match
    from jsonschema.validators import Draft202012Validator, validator_for

    cls = validator_for(schema, default=Draft202012Validator)
    try:
        error = best_match(_metaschema_validator(cls).iter_errors(schema))
    except RecursionError:
        raise InvalidRequestError("the schema is nested too deeply to check", field=field) from None
    if error is None:
        return
    message = _short(error.message)
    if error.context:  # anyOf / oneOf: the alternative that came closest says more ("not one of [...]")
        closest = best_match(error.context)
        if closest is not None and closest.message != error.message:
            message += f" ({_short(closest.message)})"
    metaschema = cls.META_SCHEMA.get("$id") or cls.META_SCHEMA.get("id") or cls.__name__
    raise InvalidRequestError(f"not a valid JSON Schema (metaschema {metaschema}): at "
                              f"{_where(json_pointer(error.absolute_path))}: {message}", field=field)


_DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/"


@functools.cache
def _metaschema_validator(cls: type[Validator]) -> Validator:
    """A validator of schemas of draft ``cls``, without a format checker (see the module docstring)."""
    from jsonschema.validators import Draft202012Validator

    if cls is Draft202012Validator:
        try:
            return Draft202012Validator(flat_metaschema_2020_12())
        except (KeyError, TypeError, ValueError) as e:  # another jsonschema-specifications layout
            log.warning("checking schemas against the official 2020-12 metaschema (slower): %s", e)
    return cls(cls.META_SCHEMA)


def flat_metaschema_2020_12() -> dict[str, Any]:
    """The draft 2020-12 metaschema as one document: the ``properties`` and ``$defs`` of its seven
    vocabularies merged with its own, ``{"$dynamicRef": "#meta"}`` as ``{"$ref": "#"}`` (the root: no
    extension metaschema is in play) and the vocabularies' ``$ref``s made local. Raises ``ValueError``
    if the bundled metaschemas do not have the expected shape (two vocabularies naming one keyword)."""
    from jsonschema_specifications import REGISTRY

    root = REGISTRY.contents(_DRAFT_2020_12 + "schema")
    properties: dict[str, Any] = {}
    defs: dict[str, Any] = {}
    for part in [*(ref["$ref"] for ref in root["allOf"]), None]:
        vocabulary = root if part is None else REGISTRY.contents(_DRAFT_2020_12 + part)
        for merged, new in ((properties, vocabulary.get("properties", {})), (defs, vocabulary.get("$defs", {}))):
            clash = merged.keys() & new.keys()
            if clash:
                raise ValueError(f"{sorted(clash)} defined twice")
            merged.update(new)
    flat = {"$schema": _DRAFT_2020_12 + "schema", "type": root["type"], "properties": properties, "$defs": defs}
    return _localize(flat)


def _localize(node: Any) -> Any:
    """``$dynamicRef: #meta`` → ``$ref: #``; ``$ref: meta/validation#/$defs/x`` → ``$ref: #/$defs/x``."""
    if isinstance(node, list):
        return [_localize(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "$dynamicRef" and isinstance(value, str):  # (a *property* named $ref has a dict value)
            if value != "#meta":
                raise ValueError(f"unexpected $dynamicRef {value!r}")
            out["$ref"] = "#"
        elif key == "$ref" and isinstance(value, str):
            if "#/$defs/" not in value:
                raise ValueError(f"unexpected $ref {value!r}")
            out["$ref"] = "#" + value.split("#", 1)[1]
        else:
            out[key] = _localize(value)
    return out


def explain_llguidance_error(schema: dict[str, Any], message: str) -> str:
    """llguidance's message on ``schema``, preceded by what it means and the pointers of the places
    it concerns, when we can find them; its first line is always kept."""
    first = first_line(message)
    found = re.search(r"Unimplemented keys: (\[.*?\])", message)
    if found:
        keys = json.loads(found.group(1))
        places = "; ".join(f"{json.dumps(k)} at {_places(find_keyword(schema, k))}" for k in keys)
        word = "keyword" if len(keys) == 1 else "keywords"
        return f"unsupported JSON Schema {word} {places} (llguidance: {first})"
    found = re.search(r"Unknown format: (.+)", message)
    if found:
        fmt = found.group(1).strip()
        pointers = [p + "/format" for p, node in iter_schemas(schema) if node.get("format") == fmt]
        return f"unsupported format {fmt!r} at {_places(pointers)} (llguidance: {first})"
    found = re.search(r"Pointer '(.*?)' does not exist", message)
    if found:
        target = found.group(1)
        pointers = [p + "/$ref" for p, node in iter_schemas(schema)
                    if isinstance(node.get("$ref"), str) and node["$ref"].endswith("#" + target)]
        return f"$ref to {target!r}, which does not exist, at {_places(pointers)} (llguidance: {first})"
    if "regex parse error" in message:
        bad = _bad_patterns(schema)
        if bad:
            pointer, pattern, reason = bad[0]
            return f"invalid regex {pattern!r} at {pointer}: {reason} (llguidance: {first})"
    return f"llguidance cannot compile it: {first}"


def _places(pointers: list[str]) -> str:
    if not pointers:
        return "(place not found)"
    shown = ", ".join(_where(p) for p in pointers[:_MAX_PLACES])
    more = len(pointers) - _MAX_PLACES
    return shown + (f" and {more} more" if more > 0 else "")


def _bad_patterns(schema: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(pointer, regex, llguidance's reason) of every ``pattern`` and ``patternProperties`` name that
    llguidance cannot compile alone."""
    import llguidance

    found = []
    for pointer, node in iter_schemas(schema):
        candidates = [(pointer + "/pattern", node.get("pattern"))]
        names = node.get("patternProperties")
        if isinstance(names, dict):
            candidates += [(pointer + json_pointer(["patternProperties", n]), n) for n in names]
        for where, pattern in candidates:
            if isinstance(pattern, str):
                error = llguidance.LLMatcher.validate_grammar(llguidance.LLMatcher.grammar_from_regex(pattern))
                if error:
                    found.append((where, pattern, regex_reason(error)))
    return found


def regex_reason(message: str) -> str:
    """The ``error: ...`` line of a Rust regex parse error (what is wrong), else the first line."""
    for line in message.splitlines():
        if line.strip().startswith("error:"):
            return line.strip().removeprefix("error:").strip()
    return first_line(message)


def first_line(message: str) -> str:
    """llguidance errors go on with a source excerpt or parser state; the first line says what."""
    return message.strip().splitlines()[0] if message.strip() else "unknown error"


def _short(text: str, limit: int = 300) -> str:
    """``text`` cut in the middle: jsonschema's messages open with the value and end with the problem."""
    half = (limit - 5) // 2
    return text if len(text) <= limit else f"{text[:half]} ... {text[-half:]}"
