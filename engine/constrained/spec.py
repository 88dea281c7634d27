"""``ConstraintSpec``: what a request's output must look like, declared as data.

Exactly one of the four forms is set. The engine compiles the spec at submit time into a
per-request matcher (``engine/constrained/compiler.py``); this module is plain data and imports
neither torch nor llguidance, so callers can build specs without loading the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from engine.errors import InvalidRequestError


@dataclass
class ConstraintSpec:
    """A declarative output constraint; set exactly one field."""

    json_schema: dict[str, Any] | None = None
    """A JSON Schema (as a dict). The output is one JSON value matching it, written compactly with
    ``", "`` and ``": "`` separators and no other whitespace."""
    regex: str | None = None
    """A regular expression (Rust ``regex`` syntax) the whole output must match."""
    choices: Sequence[str] | None = None
    """The output is exactly one of these strings (stored as a tuple)."""
    grammar: str | None = None
    """A Lark grammar in llguidance's dialect (``start`` is the top rule)."""

    def __post_init__(self) -> None:
        given = [f.name for f in fields(self) if getattr(self, f.name) is not None]
        if len(given) != 1:
            got = ", ".join(given) if given else "none"
            raise InvalidRequestError(f"set exactly one of json_schema, regex, choices, grammar (got {got})",
                                      field="constraint")
        if self.json_schema is not None and not isinstance(self.json_schema, dict):
            raise InvalidRequestError(f"must be a dict, got {type(self.json_schema).__name__}",
                                      field="constraint.json_schema")
        for name in ("regex", "grammar"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidRequestError("must be a non-empty string", field=f"constraint.{name}")
        if self.choices is not None:
            self.choices = _check_choices(self.choices)

    @property
    def kind(self) -> str:
        """The name of the field that is set: ``json_schema``, ``regex``, ``choices`` or ``grammar``."""
        return next(f.name for f in fields(self) if getattr(self, f.name) is not None)


def _check_choices(choices: object) -> tuple[str, ...]:
    if isinstance(choices, (str, bytes)) or not isinstance(choices, Sequence):
        raise InvalidRequestError(f"must be a list of strings, got {type(choices).__name__}",
                                  field="constraint.choices")
    if not choices:
        raise InvalidRequestError("must not be empty", field="constraint.choices")
    bad = next((c for c in choices if not isinstance(c, str) or not c), None)
    if bad is not None:
        raise InvalidRequestError(f"every choice must be a non-empty string, got {bad!r}",
                                  field="constraint.choices")
    return tuple(choices)
