"""How failures travel up a run's levels: an ``end`` node's ``EndRun``, a node's ``NodeFailure``, and
picking the one that matters out of a task group's exception group."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if sys.version_info < (3, 11):  # pragma: no cover - anyio installs the backport there
    from exceptiongroup import BaseExceptionGroup
if TYPE_CHECKING:
    from agentflow.runtime.run import Frame


class EndRun(Exception):
    """Raised by an ``end`` node; caught by the frame (workflow or sub-workflow) it belongs to."""

    def __init__(self, frame: Frame) -> None:
        self.frame = frame


class NodeFailure(Exception):
    """A node failed for good with no ``on_error`` edge. It fails the composite node whose body holds the
    node (which may retry or handle it), and at the top, the run. ``path`` is where it happened."""

    def __init__(self, path: str, error: BaseException) -> None:
        self.path = path
        self.error = error
        super().__init__(f"node {path!r} failed: {type(error).__name__}: {error}")


@contextmanager
def first_error() -> Iterator[None]:
    """Task groups raise exception groups; a run wants the one error that matters: an ``EndRun`` first,
    then a ``NodeFailure``, then whatever came first."""
    try:
        yield
    except BaseExceptionGroup as group:
        flat = list(_leaves(group))
        for kind in (EndRun, NodeFailure):
            for exc in flat:
                if isinstance(exc, kind):
                    raise exc from None
        raise flat[0] from None


def _leaves(group: BaseExceptionGroup) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def describe_failure(failure: NodeFailure, path: str) -> str:
    """A failure as reported for the node at ``path``: the error, and where it happened when that
    was a node of its body."""
    where = "" if failure.path == path else f"node {failure.path!r}: "
    return where + describe(failure.error)


def retry_after(failure: NodeFailure) -> float | None:
    """How long the failing service asked to be left alone (an LLM server's 429/503 ``Retry-After``,
    carried as ``retry_after`` by the error or one it was raised from), or None."""
    error: BaseException | None = failure.error
    seen = 0
    while error is not None and seen < 16:
        if isinstance(error, NodeFailure):
            error = error.error
            continue
        value = getattr(error, "retry_after", None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value)
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


__all__ = ["EndRun", "NodeFailure", "describe", "describe_failure", "first_error", "retry_after"]
