"""@tool: schemas from type hints and docstrings, validation, timeout, retry, concurrency; the registry's
built-ins and references."""

from __future__ import annotations

from typing import Annotated, Literal

import anyio
import jsonschema
import pytest
from pydantic import BaseModel, Field

from agentflow.tool import (
    BUILTIN_TOOLS,
    ToolArgumentError,
    ToolContext,
    ToolError,
    ToolRegistry,
    ToolRetry,
    ToolTimeoutError,
    tool,
)

pytestmark = pytest.mark.anyio
CTX = ToolContext(run_id="r", node_id="n", attempt=1, call_id="c")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Place(BaseModel):
    city: str
    country: str = "FR"


@tool(side_effects=False)
async def forecast(place: Place, days: Annotated[int, Field(ge=1, le=7)] = 1,
                   unit: Literal["C", "F"] = "C") -> dict[str, object]:
    """Daily forecast for a place.

    Args:
        place: Where, as a city and a country code.
        days: How many days ahead,
            from 1 to 7.
        unit: Temperature unit.
    """
    return {"city": place.city, "days": days, "unit": unit, "type": type(place).__name__}


def test_the_schema_comes_from_hints_and_the_docstring() -> None:
    assert forecast.name == "forecast"
    assert forecast.description == "Daily forecast for a place."
    schema = forecast.parameters
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["required"] == ["place"]
    assert schema["properties"]["days"]["minimum"] == 1 and schema["properties"]["days"]["maximum"] == 7
    assert schema["properties"]["days"]["description"] == "How many days ahead, from 1 to 7."
    assert schema["properties"]["unit"]["enum"] == ["C", "F"]
    assert schema["properties"]["place"]["description"] == "Where, as a city and a country code."
    # the nested model is described too, and instances that the schema accepts are accepted by the tool
    assert jsonschema.validate({"place": {"city": "Paris"}, "days": 3}, schema) is None
    assert forecast.openai_schema()["function"]["name"] == "forecast"


async def test_arguments_are_validated_and_coerced_before_the_call() -> None:
    out = await forecast.call({"place": {"city": "Paris"}, "days": "3"}, CTX)
    assert out == {"city": "Paris", "days": 3, "unit": "C", "type": "Place"}  # a model instance, an int
    with pytest.raises(ToolArgumentError, match=r"days: Input should be less than or equal to 7"):
        await forecast.call({"place": {"city": "Paris"}, "days": 9}, CTX)
    with pytest.raises(ToolArgumentError, match=r"missing place"):
        await forecast.call({"days": 2}, CTX)
    with pytest.raises(ToolArgumentError, match=r"unexpected colour"):
        await forecast.call({"place": {"city": "Oslo"}, "colour": "red"}, CTX)
    with pytest.raises(ToolArgumentError, match=r"place.city: Field required"):
        await forecast.call({"place": {"country": "NO"}}, CTX)
    with pytest.raises(ToolArgumentError, match=r"unit: Input should be 'C' or 'F'"):
        await forecast.call({"place": {"city": "Oslo"}, "unit": "K"}, CTX)


async def test_a_slow_tool_times_out_with_a_clear_error() -> None:
    @tool(timeout=0.05)
    async def slow() -> str:
        await anyio.sleep(5)
        return "never"

    with pytest.raises(ToolTimeoutError, match=r"'slow' timed out after 0.05 s"):
        await slow.call({}, CTX)


async def test_only_side_effect_free_tools_are_retried_by_default() -> None:
    attempts = {"read": 0, "write": 0, "bad": 0}

    @tool(side_effects=False, retry=ToolRetry(max_attempts=3, initial_delay=0.001))
    def read() -> str:
        attempts["read"] += 1
        if attempts["read"] < 3:
            raise ConnectionError("flaky")
        return "ok"

    @tool
    def write() -> str:
        attempts["write"] += 1
        raise ConnectionError("flaky")

    @tool(side_effects=False)
    def bad(n: int) -> int:
        attempts["bad"] += 1
        return n

    assert await read.call({}, CTX) == "ok" and attempts["read"] == 3
    with pytest.raises(ConnectionError):
        await write.call({}, CTX)
    assert attempts["write"] == 1
    with pytest.raises(ToolArgumentError):
        await bad.call({"n": "not a number"}, CTX)
    assert attempts["bad"] == 0  # refused before the call, and never retried


async def test_max_concurrency_bounds_calls_in_flight() -> None:
    running = peak = 0

    @tool(max_concurrency=2)
    async def limited(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.02)
        running -= 1
        return i

    async with anyio.create_task_group() as tg:
        for i in range(7):
            tg.start_soon(limited.call, {"i": i}, CTX)
    assert peak == 2


def test_bad_tool_definitions_are_refused() -> None:
    with pytest.raises(ToolError, match="must be 1-64 letters"):
        tool(name="has space")(lambda: None)
    with pytest.raises(ToolError, match="on_error"):
        tool(name="x", on_error="ignore")(lambda: None)  # type: ignore[call-overload]


async def test_the_registry_resolves_built_ins_groups_and_refuses_unknown_names(monkeypatch: pytest.MonkeyPatch,
                                                                              tmp_path: object) -> None:
    monkeypatch.setenv("AGENTFLOW_WORKSPACE", str(tmp_path))
    registry = ToolRegistry()
    assert "calculator" in registry and "files" in registry and "http_get" in registry
    assert "nope" not in registry and "mcp:weather/*" not in registry  # no MCP server configured
    tools = await registry.resolve(["calculator", "files", "calculator"])
    assert [t.name for t in tools] == ["calculator", "read_file", "list_files", "write_file"]
    assert await tools[0].call({"expression": "2 ** 10 + 1"}, CTX) == 1025
    assert set(BUILTIN_TOOLS) <= set(registry)
    with pytest.raises(ToolError, match=r"unknown tool 'nope' \(registered or built in: .*calculator"):
        await registry.resolve(["nope"])
    with pytest.raises(ToolError, match="needs an MCP server"):
        await registry.resolve(["mcp:weather/*"])
