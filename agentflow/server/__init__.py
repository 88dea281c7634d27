"""The HTTP server (``agentflow serve``): runs API with SSE, webhook triggers, an OpenAI-compatible
API and ``/generate`` on the local model, metrics and limits. See :func:`create_app`."""

from agentflow.server.app import create_app
from agentflow.server.config import ApiKey, ServerConfig

__all__ = ["ApiKey", "ServerConfig", "create_app"]
