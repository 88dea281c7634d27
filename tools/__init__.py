"""Built-in tools for agentflow workflows (they build on ``agentflow.tool``)."""

__all__: list[str] = []
