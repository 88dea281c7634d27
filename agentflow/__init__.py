"""agentflow: agent workflows on an async orchestrator, backed by an in-process inference engine.

The engine lives in the top-level package ``engine``; this package holds the framework around it
(the CLI today; DSL, runtime, server and SDK as they land).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
