"""Errors of the DSL layer.

Hierarchy::

    AgentflowError                 (agentflow.errors: base of every agentflow error, has ``code``)
    ├── WorkflowValidationError    a workflow failed validation; ``.issues`` lists every problem
    └── TemplateError              a template or expression failed to compile or render

A :class:`ValidationIssue` is data, not an exception: the server returns a list of them as a 422 body
and ``agentflow validate`` prints them with line and column.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from agentflow.errors import AgentflowError


class ValidationIssue(BaseModel):
    """One problem found in a workflow, with a stable ``code`` and where it is."""

    model_config = ConfigDict(frozen=True)

    code: str
    """Stable, snake_case: ``unknown_node``, ``duplicate_id``, ``cycle`` ... (see docs/workflow-yaml.md)."""
    message: str
    pointer: str = ""
    """RFC 6901 JSON pointer into the workflow document, e.g. ``/nodes/2/prompt``."""
    line: int | None = None
    """1-based line in the YAML source, when the workflow came from YAML."""
    column: int | None = None
    """1-based column in the YAML source."""

    def __str__(self) -> str:
        where = f"{self.line}:{self.column}: " if self.line is not None else ""
        at = f" (at {self.pointer})" if self.pointer else ""
        return f"{where}{self.code}: {self.message}{at}"


class WorkflowValidationError(AgentflowError):
    """A workflow did not validate. ``issues`` holds every problem found, not just the first."""

    code = "invalid_workflow"

    def __init__(self, issues: list[ValidationIssue], source: str | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        head = f"{source}: " if source else ""
        lines = "\n".join(f"  {issue}" for issue in self.issues)
        super().__init__(f"{head}{len(self.issues)} problem(s) in workflow:\n{lines}")


class TemplateError(AgentflowError):
    """A template or expression failed; the message names the node and the field."""

    code = "template_error"

    def __init__(self, message: str, *, node: str | None = None, field: str | None = None) -> None:
        self.node = node
        self.field = field
        where = " ".join(x for x in (f"node {node!r}" if node else "", f"field {field!r}" if field else "") if x)
        super().__init__(f"{where}: {message}" if where else message)


__all__ = ["TemplateError", "ValidationIssue", "WorkflowValidationError"]
