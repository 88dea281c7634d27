"""Tools: argument checking (also once an argument list has been seen), the context, sync and async calls."""

from __future__ import annotations

import sys
import threading
import types
from typing import Annotated, Any

import pytest
from pydantic import Field

from agentflow.tool import ToolArgumentError, ToolContext, ToolError, as_tool, tool

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


def test_arguments_of_exact_plain_types_skip_pydantic_and_the_rest_still_go_through_it() -> None:
    """A tool of bare int/float/str/bool parameters takes arguments already of those exact types
    as they are (the hot path of tool nodes); anything else is coerced or refused by pydantic."""
    @tool
    def plain(n: int, x: float, s: str, flag: bool = False) -> str:
        return f"{n} {x} {s} {flag}"

    @tool
    def bounded(n: Annotated[int, Field(ge=0)]) -> int:
        return n

    assert plain._plain_types == {"n": int, "x": float, "s": str, "flag": bool}
    assert bounded._plain_types is None  # a constraint: always validated
    assert plain.validate({"n": 3, "x": 1.5, "s": "a"}) == {"n": 3, "x": 1.5, "s": "a"}
    coerced = plain.validate({"n": "7", "x": 2, "s": "b", "flag": True})  # a str for an int, an int for a float
    assert coerced == {"n": 7, "x": 2.0, "s": "b", "flag": True} and type(coerced["x"]) is float
    with pytest.raises(ToolArgumentError, match="n"):
        plain.validate({"n": "seven", "x": 1.0, "s": "c"})
    with pytest.raises(ToolArgumentError, match="n"):
        plain.validate({"n": True, "x": 1.0, "s": "c", "extra": 1})  # unexpected names are caught first
    with pytest.raises(ToolArgumentError):
        bounded.validate({"n": -1})
    assert bounded.validate({"n": 4}) == {"n": 4}


def test_a_foreign_module_named_tools_is_reported_instead_of_breaking_built_ins(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from agentflow.tool import builtin_tool

    assert builtin_tool("calculator") is not None
    foreign = types.ModuleType("tools")
    foreign.__file__ = str(tmp_path / "tools.py")
    monkeypatch.setitem(sys.modules, "tools", foreign)
    monkeypatch.delitem(sys.modules, "tools.calculator")
    with pytest.raises(ToolError, match=r"the module named 'tools' is .*tools\.py, not agentflow's"):
        builtin_tool("calculator")
