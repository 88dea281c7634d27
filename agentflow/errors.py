"""The root of agentflow's error hierarchy; each layer's errors module subclasses it.

Every error has a stable ``code`` (snake_case) that the server puts in error bodies.
"""

from __future__ import annotations


class AgentflowError(Exception):
    """Base class of every error agentflow raises on purpose."""

    code: str = "agentflow_error"


__all__ = ["AgentflowError"]
