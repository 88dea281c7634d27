"""Run store: runs, per-node checkpoints and the event log — durable in SQLite by default.

``base`` holds the records, the errors and the ``RunStore`` interface (its docstring explains the
write path and ordering guarantees); ``memory`` and ``sqlite`` are the two implementations.
"""

from __future__ import annotations

import os
from pathlib import Path

from agentflow.runtime.errors import (
    DuplicateEventError,
    RunExistsError,
    RunNotFoundError,
    StoreClosedError,
    StoreError,
    StoreVersionError,
)
from agentflow.runtime.store.base import (
    DEFAULT_TENANT,
    FINISHED,
    NodeRecord,
    PendingWrite,
    RunRecord,
    RunStatus,
    RunStore,
    WorkflowRecord,
)
from agentflow.runtime.store.memory import MemoryStore
from agentflow.runtime.store.sqlite import SQLiteStore, _init_database


def open_store(target: RunStore | str | os.PathLike[str] | None) -> RunStore:
    """A store from configuration: a store passes through; None or ``":memory:"`` gives a MemoryStore; a
    path gives an SQLiteStore (parent directories created)."""
    if isinstance(target, RunStore):
        return target
    if target is None or str(target) == ":memory:":
        return MemoryStore()
    path = Path(target).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(path)


def check_store(target: str | os.PathLike[str]) -> None:
    """Create or check the SQLite store at ``target`` (not ``":memory:"``) without opening it for runs:
    ``StoreError`` (or ``OSError``) says why it cannot be used, before a server starts on it."""
    if str(target) == ":memory:":
        return
    path = Path(target).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    _init_database(path)


__all__ = [
    "DEFAULT_TENANT", "FINISHED", "DuplicateEventError", "MemoryStore", "NodeRecord", "PendingWrite", "RunExistsError",
    "RunNotFoundError", "RunRecord", "RunStatus", "RunStore", "SQLiteStore", "StoreClosedError", "StoreError",
    "StoreVersionError", "WorkflowRecord", "check_store", "open_store",
]
