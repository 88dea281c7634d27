"""MCP servers' tools as agentflow tools (tools/mcp.py), against a real MCP server built with the
official SDK (tests/mcp_servers/weather.py), over stdio and over Streamable HTTP."""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import mcp.types as mcp_types
import pytest

from agentflow.tool import Tool, ToolContext, ToolError, ToolRetry, ToolTimeoutError
from tools.mcp import MCPConnection, MCPManager, MCPServer, _exposed_name, convert_result, parse_reference

pytestmark = pytest.mark.anyio

SERVER_SCRIPT = Path(__file__).resolve().parent / "mcp_servers" / "weather.py"
CTX = ToolContext(run_id="run", node_id="node", attempt=1)
OPENAI_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
CONDITIONS = ("sunny", "cloudy", "rain", "snow", "windy")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def weather(**kwargs: Any) -> MCPServer:
    kwargs.setdefault("name", "weather")
    return MCPServer(command=[sys.executable, str(SERVER_SCRIPT)], **kwargs)


def expected_forecast(city: str, days: int = 1) -> dict[str, Any]:
    """The test server's formula, recomputed here independently of its module."""
    base = int.from_bytes(hashlib.sha256(city.strip().lower().encode()).digest()[:4], "big")
    daily = []
    for day in range(days):
        value = (base >> (day % 16)) + 31 * day
        daily.append({"day": day + 1, "temperature_c": value % 41 - 10, "conditions": CONDITIONS[value % 5]})
    return {"city": city, "days": days, "daily": daily}


async def check_forecast_tool(forecast: Tool) -> None:
    first = await forecast.call({"city": "Paris", "days": 3}, CTX)
    assert first == expected_forecast("Paris", 3)
    assert len(first["daily"]) == 3
    assert all(-10 <= d["temperature_c"] <= 30 and d["conditions"] in CONDITIONS for d in first["daily"])
    assert await forecast.call({"city": "Paris", "days": 3}, CTX) == first  # deterministic
    assert await forecast.call({"city": "Oslo"}, CTX) == expected_forecast("Oslo", 1)


async def test_stdio_lists_tools_with_prefix_schemas_and_annotations() -> None:
    async with anyio.create_task_group() as tg:
        conn = MCPConnection(weather())
        await tg.start(conn.run)
        try:
            assert conn.connected
            assert conn.server_info is not None and conn.server_info.name == "weather"
            tools = await conn.list_tools("*")
            by_name = {t.name: t for t in tools}
            assert set(by_name) == {"weather_get_forecast", "weather_get_alerts", "weather_slow_echo", "weather_fail"}
            assert all(OPENAI_NAME.match(name) for name in by_name)

            forecast = by_name["weather_get_forecast"]
            assert forecast.description.startswith("Daily weather forecast for a city.")
            assert forecast.parameters["type"] == "object"
            assert set(forecast.parameters["properties"]) == {"city", "days"}
            assert forecast.parameters["required"] == ["city"]
            assert forecast.openai_schema()["function"]["name"] == "weather_get_forecast"

            # readOnlyHint -> no side effects (early dispatch); unannotated tools keep them.
            assert not forecast.side_effects and not by_name["weather_get_alerts"].side_effects
            assert by_name["weather_slow_echo"].side_effects and by_name["weather_fail"].side_effects

            gets = await conn.list_tools("get_*")
            assert sorted(t.name for t in gets) == ["weather_get_alerts", "weather_get_forecast"]
            assert gets[0] in tools  # the same Tool objects on every listing
            assert await conn.list_tools("nothing_*") == []

            await check_forecast_tool(forecast)
            alerts = await by_name["weather_get_alerts"].call({"region": "Brittany"}, CTX)
            assert isinstance(alerts, str) and "Brittany" in alerts
            assert await by_name["weather_slow_echo"].call({"text": "hi", "delay": 0.01}, CTX) == "hi"
        finally:
            await conn.aclose()
    assert not conn.connected


async def test_stdio_errors_timeouts_and_bad_arguments() -> None:
    async with anyio.create_task_group() as tg:
        conn = MCPConnection(weather(timeout=0.5))
        await tg.start(conn.run)
        try:
            tools = {t.name: t for t in await conn.list_tools()}
            with pytest.raises(ToolError, match="the sky is falling"):
                await tools["weather_fail"].call({"message": "the sky is falling"}, CTX)
            with pytest.raises(ToolError, match="days must be between 1 and 7"):
                await conn.call_tool("get_forecast", {"city": "Paris", "days": 9})
            with pytest.raises(ToolError, match="nonexistent"):
                await conn.call_tool("nonexistent", {})

            # Checked against the MCP inputSchema before anything is sent.
            with pytest.raises(ToolError, match="city"):
                await tools["weather_get_forecast"].call({"days": 2}, CTX)
            with pytest.raises(ToolError, match="not of type 'string'"):
                await tools["weather_get_forecast"].call({"city": 3}, CTX)

            start = time.monotonic()
            with pytest.raises(ToolTimeoutError, match=r"'slow_echo' of server 'weather' timed out after 0\.5 s"):
                await tools["weather_slow_echo"].call({"text": "late", "delay": 5}, CTX)
            assert time.monotonic() - start < 3
            with pytest.raises(ToolTimeoutError, match=r"timed out after 0\.05 s"):
                await conn.call_tool("slow_echo", {"text": "late", "delay": 5}, timeout=0.05)
            # The connection survives timeouts.
            assert await tools["weather_slow_echo"].call({"text": "again", "delay": 0.01}, CTX) == "again"
        finally:
            await conn.aclose()
    with pytest.raises(ToolError, match="not available"):
        await conn.call_tool("get_alerts", {"region": "x"})


async def test_config_prefix_include_and_side_effects_override() -> None:
    config = weather(name="wx.eu", include=["get_*", "fail"], side_effects=True, requires_approval=True,
                     retry=ToolRetry(max_attempts=1))
    async with anyio.create_task_group() as tg:
        conn = MCPConnection(config)
        await tg.start(conn.run)
        try:
            tools = await conn.list_tools()
            assert sorted(t.name for t in tools) == ["wx_eu_fail", "wx_eu_get_alerts", "wx_eu_get_forecast"]
            assert all(t.side_effects and t.requires_approval and t.retry_policy.max_attempts == 1 for t in tools)
            assert [t.name for t in await conn.list_tools("slow_*")] == []  # excluded by `include`
        finally:
            await conn.aclose()
    async with anyio.create_task_group() as tg:
        conn = MCPConnection(weather(prefix="", include=["get_forecast"]))
        await tg.start(conn.run)
        try:
            [forecast] = await conn.list_tools()
            assert forecast.name == "get_forecast"
            await check_forecast_tool(forecast)
        finally:
            await conn.aclose()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    """The weather server on Streamable HTTP in a subprocess; yields its URL."""
    port = _free_port()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, str(SERVER_SCRIPT), "--http", "--port", str(port)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"the HTTP MCP server exited with {proc.returncode}: {log.read().decode()[-2000:]}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail("the HTTP MCP server did not accept connections within 20 s")
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            proc.kill()
            proc.wait(timeout=10)


async def test_streamable_http_list_and_call(http_server: str) -> None:
    async with anyio.create_task_group() as tg:
        conn = MCPConnection(MCPServer(name="web-weather", url=http_server, headers={"X-Test": "1"}))
        await tg.start(conn.run)
        try:
            tools = {t.name: t for t in await conn.list_tools("get_*")}
            assert set(tools) == {"web-weather_get_forecast", "web-weather_get_alerts"}
            assert not tools["web-weather_get_forecast"].side_effects
            await check_forecast_tool(tools["web-weather_get_forecast"])
            with pytest.raises(ToolError, match="boom over http"):
                await conn.call_tool("fail", {"message": "boom over http"})
        finally:
            await conn.aclose()


async def test_manager_over_http_reference(http_server: str) -> None:
    async with MCPManager({"web": MCPServer(name="web", url=http_server)}) as manager:
        tools = await manager.tools_for("mcp:web/get_f*")
        assert [t.name for t in tools] == ["web_get_forecast"]
        assert await tools[0].call({"city": "Lima", "days": 2}, CTX) == expected_forecast("Lima", 2)


async def test_manager_connects_lazily_once_for_concurrent_first_uses() -> None:
    results: dict[int, list[Tool]] = {}
    async with anyio.create_task_group() as tg:
        manager = MCPManager({"weather": weather(), "other": weather(name="other")}, tg)
        assert manager.connected == []

        async def use(i: int) -> None:
            results[i] = await manager.tools("weather", "get_*")

        async with anyio.create_task_group() as users:
            users.start_soon(use, 1)
            users.start_soon(use, 2)
        assert manager.connected == ["weather"]  # one connection; "other" is never started
        assert [t.name for t in results[1]] == [t.name for t in results[2]]
        assert all(a is b for a, b in zip(results[1], results[2], strict=True))  # built by one connection
        assert await manager.connection("weather") is await manager.connection("weather")
        forecast = next(t for t in await manager.tools_for("mcp:weather") if t.name == "weather_get_forecast")
        await check_forecast_tool(forecast)

        with pytest.raises(ToolError, match=r"unknown MCP server 'nope'; configured: other, weather"):
            await manager.tools("nope")
        with pytest.raises(ToolError, match="malformed MCP tool reference"):
            await manager.tools_for("mcp:/x")
        await manager.aclose()
    assert manager.connected == []
    with pytest.raises(ToolError, match="not available"):
        await forecast.call({"city": "Paris"}, CTX)
    with pytest.raises(ToolError, match="closed"):
        await manager.tools("weather")


async def test_manager_reports_servers_that_fail_to_start() -> None:
    crash = "import sys; sys.stderr.write('cannot start: missing API key\\n'); sys.exit(3)"
    servers = [MCPServer(name="broken", command=[sys.executable, "-c", crash]),
               MCPServer(name="missing", command=["/nonexistent/mcp-server-binary"]),
               MCPServer(name="offline", url=f"http://127.0.0.1:{_free_port()}/mcp", connect_timeout=5)]
    async with MCPManager(servers) as manager:
        start = time.monotonic()
        with pytest.raises(ToolError, match="missing API key") as info:
            await manager.tools("broken")
        assert "MCP server 'broken'" in str(info.value) and "failed to start" in str(info.value)
        with pytest.raises(ToolError, match=r"MCP server 'missing' .*failed to start: FileNotFoundError"):
            await manager.tools("missing")
        with pytest.raises(ToolError, match=r"MCP server 'offline' \(url 'http://127\.0\.0\.1:\d+/mcp'\) failed"):
            await manager.tools("offline")
        assert time.monotonic() - start < 10
        assert manager.connected == []


async def test_connect_timeout_is_bounded() -> None:
    silent = MCPServer(name="silent", command=[sys.executable, "-c", "import time; time.sleep(30)"],
                       connect_timeout=0.5)
    start = time.monotonic()
    async with MCPManager([silent]) as manager:
        with pytest.raises(ToolError, match=r"MCP server 'silent' .*no connection within 0\.5 s"):
            await manager.tools("silent")
    assert time.monotonic() - start < 8


CRASHING_SERVER = """
import os
from mcp import MCPError
from mcp.server.mcpserver import MCPServer

server = MCPServer("crashy", log_level="WARNING")


@server.tool()
def busy() -> str:
    raise MCPError(code=-32000, message="rate limited: try again in 5 s")


@server.tool()
def crash() -> str:
    import sys
    sys.stderr.write("crashing on purpose\\n")
    sys.stderr.flush()
    os._exit(1)


@server.tool()
def ping() -> str:
    return "pong"


server.run("stdio")
"""


async def test_manager_reconnects_after_the_server_dies(tmp_path: Path) -> None:
    script = tmp_path / "crashy.py"
    script.write_text(CRASHING_SERVER)
    async with MCPManager([MCPServer(name="crashy", command=[sys.executable, str(script)], timeout=10)]) as manager:
        tools = {t.name: t for t in await manager.tools("crashy")}
        assert await tools["crashy_ping"].call({}, CTX) == "pong"
        with pytest.raises(ToolError, match=r"(?s)connection to the server closed.*crashing on purpose"):
            await tools["crashy_crash"].call({}, CTX)
        assert manager.connected == []
        with pytest.raises(ToolError, match="not available"):  # tools of the dead connection stay dead
            await tools["crashy_ping"].call({}, CTX)
        fresh = {t.name: t for t in await manager.tools("crashy")}  # reconnects
        assert manager.connected == ["crashy"]
        assert await fresh["crashy_ping"].call({}, CTX) == "pong"


def test_parse_reference() -> None:
    assert parse_reference("mcp:weather/*") == ("weather", "*")
    assert parse_reference("mcp:weather/get_*") == ("weather", "get_*")
    assert parse_reference("mcp:weather") == ("weather", "*")
    assert parse_reference("mcp:my-server.v2/tool_a") == ("my-server.v2", "tool_a")
    assert parse_reference("calculator") is None
    assert parse_reference("files") is None
    for bad in ("mcp:", "mcp:/x", "mcp:weather/", "mcp:bad name/x"):
        with pytest.raises(ValueError, match="malformed MCP tool reference"):
            parse_reference(bad)


def test_server_config_validation() -> None:
    with pytest.raises(ValueError, match="exactly one of command"):
        MCPServer(name="x")
    with pytest.raises(ValueError, match="exactly one of command"):
        MCPServer(name="x", command=["a"], url="http://h/mcp")
    with pytest.raises(ValueError, match="server name"):
        MCPServer(name="a/b", command=["a"])
    with pytest.raises(ValueError, match="list of strings"):
        MCPServer(name="x", command="python server.py")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="http"):
        MCPServer(name="x", url="ftp://h")
    assert MCPServer(name="x", url="http://h/mcp").transport == "http"


def test_exposed_names_are_valid_and_distinct() -> None:
    long_a, long_b = "a" * 80 + "_one", "a" * 80 + "_two"
    name_a, name_b = _exposed_name("srv_", long_a, {}), _exposed_name("srv_", long_b, {})
    assert OPENAI_NAME.match(name_a) and OPENAI_NAME.match(name_b) and name_a != name_b
    assert _exposed_name("srv_", "do.thing/now", {}) == "srv_do_thing_now"
    # "do.thing" and "do_thing" sanitise alike: the second gets a distinct name.
    other = _exposed_name("srv_", "do_thing", {"srv_do_thing": "do.thing"})
    assert other != "srv_do_thing" and OPENAI_NAME.match(other)


def test_convert_result() -> None:
    text = mcp_types.TextContent(type="text", text="hello")
    assert convert_result(mcp_types.CallToolResult(content=[text])) == "hello"
    assert convert_result(mcp_types.CallToolResult(content=[])) == ""
    assert convert_result(mcp_types.CallToolResult(content=[text], structured_content={"a": 1})) == {"a": 1}
    wrapped = mcp_types.CallToolResult(content=[text], structured_content={"result": "hello"})
    assert convert_result(wrapped, {"type": "object", "properties": {"result": {"type": "string"}}}) == "hello"
    assert convert_result(wrapped) == {"result": "hello"}  # no output schema declaring the wrapper
    with pytest.raises(ToolError, match="went wrong"):
        convert_result(mcp_types.CallToolResult(content=[mcp_types.TextContent(type="text", text="went wrong")],
                                                is_error=True))
    png = base64.b64encode(b"\x89PNG" + bytes(96)).decode()
    mixed = mcp_types.CallToolResult(content=[
        text,
        mcp_types.ImageContent(type="image", data=png, mime_type="image/png"),
        mcp_types.ResourceLink(type="resource_link", uri="file:///tmp/report.txt", name="report",
                               mime_type="text/plain"),
    ])
    items = convert_result(mixed)
    assert items[0] == {"type": "text", "text": "hello"}
    assert items[1]["type"] == "image" and items[1]["mime_type"] == "image/png"
    assert "100 bytes" in items[1]["note"] and png not in str(items)
    assert items[2] == {"type": "resource_link", "uri": "file:///tmp/report.txt", "name": "report",
                        "mime_type": "text/plain"}


async def test_a_server_error_with_code_32000_is_not_a_closed_connection(tmp_path: Path) -> None:
    # -32000 is the SDK's code for "connection closed", and also the first of JSON-RPC's server-error codes.
    script = tmp_path / "crashy.py"
    script.write_text(CRASHING_SERVER)
    async with MCPManager([MCPServer(name="crashy", command=[sys.executable, str(script)], timeout=10)]) as manager:
        tools = {t.name: t for t in await manager.tools("crashy")}
        with pytest.raises(ToolError, match="rate limited: try again in 5 s"):
            await tools["crashy_busy"].call({}, CTX)
        assert manager.connected == ["crashy"]
        assert await tools["crashy_ping"].call({}, CTX) == "pong"  # the same connection, still up
