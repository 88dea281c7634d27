"""A small MCP server for the tests, built with the official MCP Python SDK.

    python tests/mcp_servers/weather.py                    # stdio (the default)
    python tests/mcp_servers/weather.py --http --port 8765 # Streamable HTTP on http://127.0.0.1:8765/mcp

Its data is fake and deterministic (computed from the inputs), so tests can check it by recomputing
:func:`forecast` here. In stdio mode nothing but protocol messages goes to stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

CONDITIONS = ("sunny", "cloudy", "rain", "snow", "windy")
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

server = MCPServer("weather", instructions="Fake, deterministic weather data for tests.", log_level="WARNING")


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def forecast(city: str, days: int = 1) -> dict[str, Any]:
    """The fake forecast for ``city`` over ``days`` days (pure function of its inputs)."""
    base = _seed(city.strip().lower())
    daily = []
    for day in range(days):
        value = (base >> (day % 16)) + 31 * day
        daily.append({"day": day + 1, "temperature_c": value % 41 - 10, "conditions": CONDITIONS[value % 5]})
    return {"city": city, "days": days, "daily": daily}


@server.tool(annotations=READ_ONLY)
def get_forecast(city: str, days: int = 1) -> dict[str, Any]:
    """Daily weather forecast for a city.

    Args:
        city: City name, e.g. "Paris".
        days: How many days ahead (1-7).
    """
    if not 1 <= days <= 7:
        raise ToolError(f"days must be between 1 and 7, got {days}")
    return forecast(city, days)


@server.tool(annotations=READ_ONLY)
def get_alerts(region: Annotated[str, Field(max_length=40)]) -> str:
    """Active weather alerts for a region, as text.

    Args:
        region: Region name, e.g. "Brittany".
    """
    if _seed(region.strip().lower()) % 2:
        return f"Storm warning for {region}: winds up to 90 km/h."
    return f"No active alerts for {region}."


@server.tool()
async def slow_echo(text: str, delay: float = 0.3) -> str:
    """Echo ``text`` back after sleeping ``delay`` seconds.

    Args:
        text: What to echo.
        delay: Seconds to wait first.
    """
    await anyio.sleep(delay)
    return text


@server.tool()
def fail(message: str) -> str:
    """Always fail with ``message`` (an MCP error result carrying it: the SDK's ToolError is an
    anticipated failure, whose text reaches the client; other exceptions are reported generically).

    Args:
        message: The error message.
    """
    raise ToolError(message)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--http", action="store_true", help="serve Streamable HTTP instead of stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    if args.http:
        server.run("streamable-http", host=args.host, port=args.port, streamable_http_path="/mcp")
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
