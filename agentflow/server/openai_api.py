"""(being written)"""

from __future__ import annotations

from agentflow.server.endpoint import Endpoint

ENDPOINTS: list[Endpoint] = []
