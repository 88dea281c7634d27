"""Workflow specs written inline in tests: ``spec(yaml_text)``, and ``echo``, the tool most of them call."""

from __future__ import annotations

from typing import Any

import yaml

from agentflow.dsl.ir import WorkflowSpec


def spec(text: str) -> WorkflowSpec:
    """The IR of a YAML workflow (model validation only: tests of the validator use the loader)."""
    return WorkflowSpec.model_validate(yaml.safe_load(text))


def echo(value: Any) -> Any:
    return value


TWO_ASKS = """
name: two_asks
nodes:
  - id: both
    kind: parallel
    branches:
      legal: {nodes: [{id: ok, kind: interrupt, prompt: "Legal OK?"}]}
      finance: {nodes: [{id: ok2, kind: interrupt, prompt: "Finance OK?"}]}
output: both
"""
"""A run that waits at two interrupts at once (parallel branches)."""
