"""Errors of the runtime layer.

Hierarchy::

    AgentflowError
    ├── RunNotFoundError        no run with that id (in memory or in the store)
    ├── WorkflowNotFoundError   no workflow registered under that name
    ├── InvalidInputError       a run's input (or a resume value) does not match its JSON Schema
    ├── RunStateError           the operation does not fit the run's status (resume a finished run ...)
    │   └── ToolNotFoundError   a stored run uses a tool this runtime lacks (the run is left unchanged)
    ├── NoLLMError              a node needs an LLM and none is configured for its model name
    └── NodeError               one node attempt failed; ``node`` is its path
        ├── NodeTimeoutError    the attempt ran past its timeout
        └── OutputError         an LLM's output does not match the node's schema / regex / choices
    StoreError                  the run store failed (an AgentflowError too)
    ├── StoreClosedError        the store is closed
    ├── StoreVersionError       the file was written by a newer agentflow, or is no run store
    ├── RunExistsError          a run with that id is already stored
    └── DuplicateEventError     an event seq is already stored (an orchestrator bug)

``RunNotFoundError`` is one class for the store and the runtime, so one ``except`` catches both.
"""

from __future__ import annotations

from agentflow.errors import AgentflowError


class RunNotFoundError(AgentflowError):
    code = "run_not_found"


class WorkflowNotFoundError(AgentflowError):
    code = "workflow_not_found"


class StoreError(AgentflowError):
    code = "store_error"


class StoreClosedError(StoreError):
    code = "store_closed"


class StoreVersionError(StoreError):
    code = "store_version"


class RunExistsError(StoreError):
    code = "run_exists"


class DuplicateEventError(StoreError):
    code = "duplicate_event"


class CheckpointLost(StoreError):
    """A checkpoint the run queued was not committed; the run stops, since its record would be wrong."""


class InvalidInputError(AgentflowError):
    """``param`` names the value at fault the way request bodies do (``input.items.2.price``), when known."""

    code = "invalid_input"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class RunStateError(AgentflowError):
    code = "invalid_run_state"


class ToolNotFoundError(RunStateError):
    code = "tool_not_found"


class NoLLMError(AgentflowError):
    code = "no_llm"


class NodeError(AgentflowError):
    """A node attempt failed. ``node`` is the node's path."""

    code = "node_error"

    def __init__(self, message: str, *, node: str = "") -> None:
        self.node = node
        super().__init__(f"node {node!r}: {message}" if node else message)


class NodeTimeoutError(NodeError):
    code = "node_timeout"


class OutputError(NodeError):
    code = "invalid_output"


__all__ = ["CheckpointLost", "DuplicateEventError", "InvalidInputError", "NoLLMError", "NodeError", "NodeTimeoutError",
           "OutputError", "RunExistsError", "RunNotFoundError", "RunStateError", "StoreClosedError", "StoreError",
           "StoreVersionError", "WorkflowNotFoundError"]
