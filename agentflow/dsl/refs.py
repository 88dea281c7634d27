"""``$ref`` in a workflow's JSON Schemas: each must resolve within the schema itself.

A run never fetches another document (agentflow/schemas.py validates with a registry that retrieves
nothing), so a ``$ref`` that does not resolve here could only fail later, when the run checks a value.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import referencing.exceptions
import referencing.jsonschema
from jsonschema_specifications import REGISTRY as METASCHEMAS

from agentflow.dsl.structure import describe_value, json_pointer

_SUBSCHEMA = frozenset({"additionalItems", "additionalProperties", "contains", "contentSchema", "else", "if", "items",
                        "not", "propertyNames", "then", "unevaluatedItems", "unevaluatedProperties"})
_SUBSCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})
_SUBSCHEMA_MAPS = frozenset({"$defs", "definitions", "dependentSchemas", "patternProperties", "properties",
                             "dependencies"})


def _refs(schema: object, path: list[str | int]) -> Iterator[tuple[list[str | int], dict[str, Any]]]:
    """Every subschema that has a ``$ref``, with its path, following only keywords that hold subschemas (so a
    ``$ref`` key inside ``const`` or ``default`` data is not taken for one)."""
    if not isinstance(schema, dict):
        return
    if isinstance(schema.get("$ref"), str):
        yield path, schema
    for key, value in schema.items():
        if key in _SUBSCHEMA and isinstance(value, dict):
            yield from _refs(value, [*path, key])
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            for j, item in enumerate(value):
                yield from _refs(item, [*path, key, j])
        elif key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            for name, item in value.items():
                yield from _refs(item, [*path, key, name])


def ref_problems(schema: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(pointer of the $ref, why)`` for each ``$ref`` in ``schema`` that does not resolve within the schema
    itself (nothing is fetched; the JSON Schema meta-schemas are known)."""
    default = referencing.jsonschema.DRAFT202012
    specification = referencing.jsonschema.specification_with(schema.get("$schema", ""), default=default)
    root = METASCHEMAS.resolver_with_root(specification.create_resource(schema))
    for path, sub in _refs(schema, []):
        resolver = root
        for depth in range(len(path) + 1):  # enter every enclosing subschema with an $id, outermost first
            node = _at(schema, path[:depth])
            if isinstance(node, dict) and isinstance(node.get("$id"), str) and depth:
                resolver = resolver.in_subresource(specification.create_resource(node))
        ref, ptr = sub["$ref"], json_pointer([*path, "$ref"])
        try:
            target = resolver.lookup(ref).contents
        except (referencing.exceptions.PointerToNowhere, referencing.exceptions.NoSuchAnchor):
            yield ptr, f"`$ref` {ref!r} points to nothing in the schema"
        except referencing.exceptions.Unresolvable:
            yield ptr, (f"`$ref` {ref!r} names another document, and remote references are not fetched: put the "
                        "schema under `$defs` and refer to it as '#/$defs/NAME'")
        else:
            if not isinstance(target, dict | bool):
                yield ptr, f"`$ref` {ref!r} points to {describe_value(target)}, which is not a schema"


def _at(data: Any, path: list[str | int]) -> Any:
    for part in path:
        data = data[part]
    return data


__all__ = ["ref_problems"]
