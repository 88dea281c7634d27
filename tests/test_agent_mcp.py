"""An agent node on the demo engine calling the tools of a real MCP server (official SDK), over stdio
and over Streamable HTTP, configured on the Runtime and named from YAML as ``mcp:SERVER/PATTERN``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from agentflow import LocalEngine, Runtime, load_yaml
from engine import AsyncEngine, Engine
from tests.test_mcp_tools import SERVER_SCRIPT, http_server
from tools.mcp import MCPServer

pytestmark = pytest.mark.anyio
__all__ = ["http_server"]  # the fixture, imported so this module can use it

WORKFLOW = """
name: alerts_agent
nodes:
  - id: ask
    kind: agent
    system: "You check weather alerts with the tools before answering."
    prompt: "Are there storms in Brittany today?"
    tools: ["mcp:weather/get_*"]
    tool_choice: get_alerts_tool
    max_steps: 2
    sampling: {temperature: 0, max_tokens: 200}
output: ask
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def llm(demo_path: Any) -> Iterator[LocalEngine]:
    engine = AsyncEngine(engine=Engine("demo", max_kv_tokens=8192))
    yield LocalEngine(engine)
    engine.shutdown()


def expected_alert(region: str) -> set[str]:
    return {f"Storm warning for {region}: winds up to 90 km/h.", f"No active alerts for {region}."}


async def run_with(llm: LocalEngine, server: MCPServer) -> None:
    source = WORKFLOW.replace("get_alerts_tool", f"{server.tool_prefix}get_alerts")
    async with Runtime(llm=llm, store=":memory:", mcp_servers=[server]) as rt:
        record = await rt.run(load_yaml(source))
        events = [e async for e in rt.events(record.run_id)]
    assert record.status == "completed", record.error
    calls = [e for e in events if e.event == "tool.call"]  # type: ignore[attr-defined]
    results = [e for e in events if e.event == "tool.result"]  # type: ignore[attr-defined]
    assert [c.tool for c in calls] == [f"{server.tool_prefix}get_alerts"]  # type: ignore[attr-defined]
    assert calls[0].early  # type: ignore[attr-defined]  # read-only on the server: started as soon as decoded
    region = calls[0].arguments["region"]  # type: ignore[attr-defined]
    assert isinstance(region, str)
    assert results[0].error is None and results[0].result in expected_alert(region)  # type: ignore[attr-defined]
    assert isinstance(record.output, str)


@pytest.mark.slow
async def test_agent_calls_an_mcp_tool_over_stdio(llm: LocalEngine) -> None:
    await run_with(llm, MCPServer(name="weather", command=[sys.executable, str(SERVER_SCRIPT)]))


@pytest.mark.slow
async def test_agent_calls_an_mcp_tool_over_streamable_http(llm: LocalEngine, http_server: str) -> None:
    await run_with(llm, MCPServer(name="weather", url=http_server, prefix="web_"))


async def test_an_unconfigured_mcp_server_is_a_validation_error() -> None:
    from agentflow.dsl.errors import WorkflowValidationError
    from agentflow.tool import ToolRegistry

    with pytest.raises(WorkflowValidationError, match=r"unknown_tool|not registered"):
        load_yaml(WORKFLOW.replace("mcp:weather", "mcp:nowhere"), tools=ToolRegistry())
