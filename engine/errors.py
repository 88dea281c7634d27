"""Errors raised by the engine.

Every error carries a stable ``code`` (a short snake_case string that callers may switch on) and,
where it concerns one input, the ``field`` it concerns. The hierarchy::

    EngineError
    ├── ModelLoadError                 checkpoint missing, unreadable or inconsistent
    │   └── UnsupportedArchitectureError   config.json names a model family we do not implement
    ├── InvalidRequestError (ValueError)   a request or its parameters are wrong; nothing was queued
    ├── RequestNotFoundError (KeyError)    abort / lookup of an id the engine does not know
    ├── ConstraintViolationError           a constrained output fails its schema: an engine bug, never input's fault
    └── EngineClosedError                  the engine was shut down (or its step loop died)
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""

    code = "engine_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ModelLoadError(EngineError):
    """The checkpoint could not be found, read or matched to the model code."""

    code = "model_load_error"


class UnsupportedArchitectureError(ModelLoadError):
    """The checkpoint's architecture is not one the engine implements."""

    code = "unsupported_architecture"


class InvalidRequestError(EngineError, ValueError):
    """A request (or its sampling parameters) is invalid. ``field`` names the offending input."""

    code = "invalid_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        prefix = f"{field}: " if field and not message.startswith(field) else ""
        super().__init__(prefix + message, field=field)


class RequestNotFoundError(EngineError, KeyError):
    """No request with that id is known to the engine."""

    code = "request_not_found"

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class EngineClosedError(EngineError):
    """The engine has been closed, or its background loop stopped after an internal error."""

    code = "engine_closed"


class ConstraintViolationError(EngineError):
    """A finished constrained output does not parse or validate (jsonschema) although the grammar
    accepted it. That is a bug in the engine or llguidance, never the caller's fault: it is raised,
    and logged, instead of handing on output that breaks its schema."""

    code = "constraint_violation"
