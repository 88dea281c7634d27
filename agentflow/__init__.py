"""agentflow: agent workflows on an async orchestrator, backed by an in-process inference engine.

The engine lives in the top-level package ``engine``; this package holds the framework around it:
the workflow DSL (Python builder and YAML, one Graph IR), the orchestrator with its durable run
store, the LLM backends, the tool protocol and the CLI. Importing it does not import torch.
"""

from agentflow.dsl import Subgraph, Workflow, WorkflowSpec, load_workflow, load_yaml
from agentflow.errors import AgentflowError
from agentflow.llm import LLM, LocalEngine, OpenAICompatible
from agentflow.runtime import Runtime
from agentflow.tool import Tool, ToolContext, ToolRegistry, tool

__version__ = "0.1.0"

__all__ = [
    "LLM",
    "AgentflowError",
    "LocalEngine",
    "OpenAICompatible",
    "Runtime",
    "Subgraph",
    "Tool",
    "ToolContext",
    "ToolRegistry",
    "Workflow",
    "WorkflowSpec",
    "__version__",
    "load_workflow",
    "load_yaml",
    "tool",
]
