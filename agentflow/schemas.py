"""JSON Schema checks shared by the runtime (run inputs, resume values, LLM outputs).

``multipleOf`` is checked in decimal arithmetic: with binary floats ``19.99`` is "not a multiple of
0.01", though the grammar that produced it (and every reader) says it is.

``$ref`` resolves within the schema (and to the JSON Schema meta-schemas); nothing is fetched. A ``$ref``
that does not resolve is reported as a violation naming it, never raised.
"""

from __future__ import annotations

import copy
import functools
from decimal import Decimal, InvalidOperation
from typing import Any

import jsonschema
import jsonschema.validators
import referencing
import referencing.exceptions


def _multiple_of(validator: Any, divisor: Any, instance: Any, schema: Any) -> Any:
    if not validator.is_type(instance, "number") or isinstance(instance, bool):
        return
    try:
        ok = Decimal(str(instance)) % Decimal(str(divisor)) == 0
    except (InvalidOperation, ZeroDivisionError):
        ok = False
    if not ok:
        yield jsonschema.ValidationError(f"{instance!r} is not a multiple of {divisor!r}")


@functools.lru_cache(maxsize=16)
def _decimal_class(base: Any) -> Any:
    """``base`` (a draft's validator class) with decimal ``multipleOf``; built once per draft."""
    return jsonschema.validators.extend(base, {"multipleOf": _multiple_of})


_LOCAL_ONLY: referencing.Registry[Any] = referencing.Registry()
"""No retrieval: jsonschema adds the meta-schemas to it; any other document is unresolvable."""


def _validator(schema: dict[str, Any]) -> Any:
    return _decimal_class(jsonschema.validators.validator_for(schema))(schema, registry=_LOCAL_ONLY)


def schema_error(schema: dict[str, Any], value: Any) -> tuple[str, str] | None:
    """The most relevant violation as ``(json_pointer, message)``, or None when ``value`` is valid."""
    try:
        error = jsonschema.exceptions.best_match(_validator(schema).iter_errors(value))
    except referencing.exceptions.Unresolvable as exc:
        ref = getattr(exc, "ref", None) or str(exc)
        return "/", (f"the schema cannot be checked: a `$ref` to {ref!r} does not resolve within it (other documents "
                     "are not fetched)")
    if error is None:
        return None
    path = [str(part) for part in error.absolute_path]
    if error.validator == "required" and isinstance(error.instance, dict):  # point at the missing property
        path += [name for name in error.validator_value
                 if isinstance(name, str) and error.message == f"{name!r} is a required property"][:1]
    return "/" + "/".join(path), error.message


def with_defaults(schema: Any, value: Any, *, depth: int = 0) -> Any:
    """``value`` with the ``default`` of every property it leaves out filled in, as a copy (``value`` is
    not changed): in objects at any depth, in the items of arrays, and inside a default that is itself
    an object. Only ``properties`` and ``items`` are followed: a default under ``anyOf``, ``oneOf`` or a
    ``$ref`` is not applied, since which branch applies is not known before validation."""
    if not isinstance(schema, dict) or depth > 64:
        return value
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        out = dict(value)
        for name, sub in schema["properties"].items():
            if name in out:
                out[name] = with_defaults(sub, out[name], depth=depth + 1)
            elif isinstance(sub, dict) and "default" in sub:
                out[name] = with_defaults(sub, copy.deepcopy(sub["default"]), depth=depth + 1)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [with_defaults(schema["items"], item, depth=depth + 1) for item in value]
    return value


__all__ = ["schema_error", "with_defaults"]
