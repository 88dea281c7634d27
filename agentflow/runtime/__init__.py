"""The orchestrator: runs workflows as anyio tasks, with events and a durable run store."""

from agentflow.runtime.errors import (
    InvalidInputError,
    NodeError,
    NodeTimeoutError,
    NoLLMError,
    OutputError,
    RunNotFoundError,
    RunStateError,
)
from agentflow.runtime.events import TERMINAL_EVENTS, EventBase, parse_event
from agentflow.runtime.orchestrator import Runtime
from agentflow.runtime.store import MemoryStore, NodeRecord, RunRecord, RunStore, SQLiteStore, open_store

__all__ = [
    "TERMINAL_EVENTS", "EventBase", "InvalidInputError", "MemoryStore", "NoLLMError", "NodeError", "NodeRecord",
    "NodeTimeoutError", "OutputError", "RunNotFoundError", "RunRecord", "RunStateError", "RunStore", "Runtime",
    "SQLiteStore", "open_store", "parse_event",
]
