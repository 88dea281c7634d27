"""Workflows as data: two front ends — the Python builder and YAML — and the Graph IR both produce.

::

    from agentflow.dsl import Workflow, load_yaml

    wf = Workflow("hello")
    wf.llm("greet", "Say hello to {{ input.name }}")
    spec = wf.build()                     # a validated WorkflowSpec
    assert load_yaml(wf.to_yaml()) == spec

Layout: :mod:`~agentflow.dsl.ir` (the IR), :mod:`~agentflow.dsl.builder` (Python front end),
:mod:`~agentflow.dsl.yaml_loader` (YAML front end), :mod:`~agentflow.dsl.validate` (the checks both
share), :mod:`~agentflow.dsl.templates` (the Jinja2 sandbox), :mod:`~agentflow.dsl.errors`.
"""

from __future__ import annotations

from agentflow.dsl.builder import NodeRef, Subgraph, Workflow
from agentflow.dsl.errors import TemplateError, ValidationIssue, WorkflowValidationError
from agentflow.dsl.ir import (
    AgentNode,
    Body,
    Defaults,
    Edge,
    EndNode,
    InterruptNode,
    LLMNode,
    LoopNode,
    MapNode,
    Message,
    ParallelNode,
    RetryPolicy,
    Sampling,
    StateKey,
    SwitchNode,
    ToolNode,
    Trigger,
    WorkflowNode,
    WorkflowSpec,
)
from agentflow.dsl.validate import validate_spec
from agentflow.dsl.yaml_loader import load_workflow, load_yaml, validate_yaml

__all__ = [
    "AgentNode",
    "Body",
    "Defaults",
    "Edge",
    "EndNode",
    "InterruptNode",
    "LLMNode",
    "LoopNode",
    "MapNode",
    "Message",
    "NodeRef",
    "ParallelNode",
    "RetryPolicy",
    "Sampling",
    "StateKey",
    "Subgraph",
    "SwitchNode",
    "TemplateError",
    "ToolNode",
    "Trigger",
    "ValidationIssue",
    "Workflow",
    "WorkflowNode",
    "WorkflowSpec",
    "WorkflowValidationError",
    "load_workflow",
    "load_yaml",
    "validate_spec",
    "validate_yaml",
]
