"""Tools: argument checking (also once an argument list has been seen), the context, sync and async calls."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from agentflow.tool import ToolContext, ToolError, as_tool

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


CTX = ToolContext(run_id="r1", node_id="fetch", attempt=2)


async def add(a: int, b: int = 1) -> int:
    return a + b


async def test_bad_arguments_are_refused_every_time_even_after_good_ones() -> None:
    tool = as_tool(add)
    assert await tool.call({"a": 1}, CTX) == 2
    assert await tool.call({"a": 1, "b": 5}, CTX) == 6
    for _ in range(2):  # the second time through, the good argument lists are known
        with pytest.raises(ToolError, match=r"missing a"):
            await tool.call({"b": 2}, CTX)
        with pytest.raises(ToolError, match=r"unexpected c"):
            await tool.call({"a": 1, "c": 2}, CTX)
    assert await tool.call({"b": 5, "a": 1}, CTX) == 6  # same names, other order


async def test_the_context_is_made_only_for_tools_that_take_it() -> None:
    made: list[str] = []

    def factory() -> ToolContext:
        made.append("ctx")
        return CTX

    async def keyed(x: int, ctx: ToolContext) -> str:
        return f"{ctx.idempotency_key}:{x}"

    assert await as_tool(add).call({"a": 1}, factory) == 2
    assert made == []
    assert await as_tool(keyed).call({"x": 3}, factory) == "r1:fetch:2:3"
    assert made == ["ctx"]


async def test_sync_tools_run_in_a_worker_thread() -> None:
    loop_thread = threading.get_ident()

    def where(**kwargs: Any) -> bool:
        return threading.get_ident() != loop_thread and kwargs == {"q": "x"}

    assert await as_tool(where).call({"q": "x"}, CTX) is True
