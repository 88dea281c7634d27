"""The JSON Schema of YAML workflow files, generated from the Graph IR so the two never drift apart.

Editors use it to complete and check workflow files (see docs/workflow-yaml.md); the committed copy
in ``docs/workflow.schema.json`` is regenerated with::

    python -m agentflow.dsl.schema > docs/workflow.schema.json

The schema checks structure only; the semantic checks (unknown nodes, cycles, template variables ...)
need ``agentflow validate``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from agentflow.dsl.ir import WorkflowSpec

DRAFT = "https://json-schema.org/draft/2020-12/schema"
TITLE = "agentflow workflow"


def _one_of_required(*names: str) -> list[dict[str, Any]]:
    return [{"required": [name]} for name in names]


def _rules(defs: dict[str, Any]) -> None:
    """The IR's cross-field rules (its model validators), as schema keywords editors understand."""
    for name in ("LLMNode", "AgentNode"):  # exactly one of prompt / messages
        defs[name]["oneOf"] = _one_of_required("prompt", "messages")
    defs["SwitchNode"]["oneOf"] = _one_of_required("expression", "prompt")
    constraints = ("output_schema", "regex", "choices")
    defs["LLMNode"]["not"] = {"anyOf": [{"required": [a, b]} for i, a in enumerate(constraints)
                                        for b in constraints[i + 1:]]}


def workflow_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) a YAML or JSON workflow file must match."""
    generated = WorkflowSpec.model_json_schema(by_alias=True, mode="validation")
    generated.pop("title", None)
    generated.pop("description", None)
    _rules(generated["$defs"])
    return {
        "$schema": DRAFT,
        "title": TITLE,
        "description": "An agentflow workflow: a graph of nodes over a typed state. Generated from the "
                       "Graph IR by `python -m agentflow.dsl.schema`; see docs/workflow-yaml.md.",
        **generated,
    }


def dumps() -> str:
    """The schema as the committed file holds it: indented JSON with a final newline."""
    return json.dumps(workflow_json_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(dumps())


__all__ = ["DRAFT", "TITLE", "dumps", "workflow_json_schema"]
