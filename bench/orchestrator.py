"""Orchestrator overhead next to LangGraph on identical graphs, and the engine workload's makespan, in one run.

    python bench/orchestrator.py                    # everything (a few minutes on 2 cores)
    python bench/orchestrator.py --quick            # smaller graphs, fewer repeats, 8 runs
    python bench/orchestrator.py --skip-engine      # overhead tables only

Part 1, per-node overhead. Both frameworks run the same graphs over the same state
(``count: int`` replaced, ``items: list[int]`` appended): a chain of ``--nodes`` nodes that each set
``count = count + 1``, and a fan-out ``source -> --nodes parallel workers -> join`` whose workers
each append ``count + 1`` to ``items``. A node is a trivial function, async or sync (a sync
function runs in a worker thread in both frameworks). agentflow: tool nodes, ``Runtime`` with
``store=":memory:"`` (MemoryStore) or a temporary SQLite file (durable). LangGraph: a
``StateGraph`` compiled with no checkpointer (memory) or an ``AsyncSqliteSaver`` on a temporary
file (durable, ``durability="sync"``: each step is committed before the next starts, as in
agentflow; the default ``"async"`` is shown too). Both SQLite files use WAL with
``synchronous=NORMAL``. Both are driven through their async API on one asyncio loop: uvloop's where it is installed (as
agentflow's CLI and uvicorn choose), ``--loop asyncio`` for the standard one.

    per-node overhead = (wall time of one run - wall time of a run of a 1-node graph) / (nodes - 1)

i.e. the marginal cost of each node beyond the first, whatever the framework does per run being
cancelled out by the 1-node baseline of the same framework, function kind and store. Each number
is the median over ``--repeats`` runs after one warm-up run; the samples of all frameworks are
interleaved (baseline, graph, next framework, ...) so that load from other processes hits them alike.
Both frameworks must end with the same state, which is checked.

Part 2, the engine workload. ``--runs`` runs at once, each ``llm -> tool -> llm -> tool -> llm ->
tool``: the demo model (random weights, greedy, 16 new tokens) generates, then a tool sleeps
300 ms. ``ideal`` = 3 x 0.3 s + the time the engine takes to generate the same requests (same
prompts, same token counts) issued as 3 rounds of ``--runs`` concurrent generations with no tools:
the makespan of a lockstep schedule (everyone generates, everyone waits) with a free orchestrator.
It is the issue's yardstick, not a lower bound: where the engine is compute-bound (CPU, where a
bigger batch buys little), runs drift apart, one run's tool wait overlaps other runs' generation,
and the makespan can beat it. ``sequential`` = ``--runs`` x the makespan of one run executed alone (measured,
then multiplied: the bench does not execute the runs one after another).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import itertools
import operator
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

import anyio
from tqdm import tqdm

from agentflow.dsl.ir import WorkflowSpec
from agentflow.llm.base import LLMRequest, LLMResult, TextDelta, generate
from agentflow.runtime import Runtime
from agentflow.runtime.loop import choose_loop
from agentflow.runtime.loop import run as run_on_loop
from agentflow.runtime.store import SQLiteStore
from agentflow.runtime.store.sqlite import DEFAULT_SPIN_US

TARGET_US = {"memory": 50.0, "durable": 300.0}
"""The issue's targets for agentflow, µs per node."""
TARGET_NOTE = ("The targets apply to async node functions, where the numbers are the orchestrator's own cost. "
               "A sync function runs in a worker thread in both frameworks, and that thread hop "
               "(100-200 µs on a small VM) is not orchestration; those rows are for comparison.")
TARGET_MAKESPAN = 1.15
"""The issue's target for makespan / ideal."""
TOOL_SLEEP_S = 0.3
NEW_TOKENS = 16
PROMPTS = ("Run {run} ({tag}): plan the first step.",
           "Run {run} ({tag}): the lookup returned {result}. Plan the second step.",
           "Run {run} ({tag}): the lookup returned {result}. Plan the last step.")
TOOL_RESULT = "3 matching records"


@dataclass
class Case:
    """One row of the overhead table: a graph shape, a node function kind and a store."""

    graph: str  # "chain" | "fanout"
    fn: str  # "async" | "sync"
    store: str  # "memory" | "durable"
    nodes: int
    ours: float | None = None  # µs/node
    peer: float | None = None  # LangGraph, same guarantees
    peer_alt: float | None = None  # LangGraph, InMemorySaver (memory) / durability="async" (durable)
    spread: dict[str, tuple[float, float]] = field(default_factory=dict)  # column -> interquartile range


def per_node_us(t_graph: float, t_one: float, nodes: int) -> float:
    return (t_graph - t_one) / (nodes - 1) * 1e6


# -- agentflow graphs ---------------------------------------------------------------------------------

async def inc(x: int) -> int:
    return x + 1


def inc_sync(x: int) -> int:
    return x + 1


STATE = {"count": {"type": "integer", "default": 0}, "items": {"type": "array", "reducer": "append"}}


def _step(node_id: str, tool: str, writes: str = "count") -> dict[str, Any]:
    return {"id": node_id, "kind": "tool", "tool": tool, "args": {"x": "{{ state.count }}"}, "writes": writes}


def af_chain(n: int, tool: str) -> WorkflowSpec:
    nodes = [_step(f"n{i}", tool) for i in range(n)]
    edges = [{"from": f"n{i}", "to": f"n{i + 1}"} for i in range(n - 1)]
    return WorkflowSpec.model_validate({"name": f"chain{n}_{tool}", "state": STATE, "nodes": nodes, "edges": edges})


def af_fanout(width: int, tool: str) -> WorkflowSpec:
    workers = [_step(f"w{i}", tool, writes="items") for i in range(width)]
    nodes = [_step("source", tool), *workers, _step("join", tool)]
    edges = [edge for i in range(width)
             for edge in ({"from": "source", "to": f"w{i}"}, {"from": f"w{i}", "to": "join"})]
    return WorkflowSpec.model_validate({"name": f"fanout{width}_{tool}", "state": STATE, "nodes": nodes,
                                        "edges": edges})


# -- LangGraph graphs ---------------------------------------------------------------------------------

class LGState(TypedDict):
    count: int
    items: Annotated[list[int], operator.add]


async def lg_step(state: LGState) -> dict[str, Any]:
    return {"count": state["count"] + 1}


async def lg_work(state: LGState) -> dict[str, Any]:
    return {"items": [state["count"] + 1]}


def lg_step_sync(state: LGState) -> dict[str, Any]:
    return {"count": state["count"] + 1}


def lg_work_sync(state: LGState) -> dict[str, Any]:
    return {"items": [state["count"] + 1]}


def lg_graph(shape: str, n: int, fn: str, checkpointer: Any) -> Any:
    from langgraph.graph import END, START, StateGraph

    step, work = (lg_step, lg_work) if fn == "async" else (lg_step_sync, lg_work_sync)
    builder = StateGraph(LGState)
    if shape == "chain":
        for i in range(n):
            builder.add_node(f"n{i}", step)
        for i in range(n - 1):
            builder.add_edge(f"n{i}", f"n{i + 1}")
        builder.add_edge(START, "n0")
        builder.add_edge(f"n{n - 1}", END)
    else:
        builder.add_node("source", step)
        builder.add_node("join", step)
        workers = [f"w{i}" for i in range(n)]
        for name in workers:
            builder.add_node(name, work)
            builder.add_edge("source", name)
        builder.add_edge(workers, "join")  # waits for all of them
        builder.add_edge(START, "source")
        builder.add_edge("join", END)
    return builder.compile(checkpointer=checkpointer)


# -- part 1: per-node overhead ------------------------------------------------------------------------

Run = Callable[[], Awaitable[dict[str, Any]]]
"""One run of one graph; returns the final state."""


def _expected(shape: str, n: int) -> dict[str, Any]:
    return {"count": n, "items": []} if shape == "chain" else {"count": 2, "items": [2] * n}


def _graph_nodes(case: Case) -> int:
    return case.nodes if case.graph == "chain" else case.nodes + 2


def _normalised(state: dict[str, Any]) -> dict[str, Any]:
    return {"count": state["count"], "items": sorted(state["items"])}


@dataclass
class Side:
    """One framework configuration in a case: how to run the 1-node baseline and the measured graph."""

    column: str  # the Case attribute its result goes to
    one: Run
    graph: Run
    t_one: list[float] = field(default_factory=list)
    t_graph: list[float] = field(default_factory=list)


class Harness:
    """The open runtimes and checkpointers; builds each case's sides."""

    def __init__(self, tmp: Path, langgraph: bool, writer: str = "process", spin_us: float = DEFAULT_SPIN_US) -> None:
        self.tmp = tmp
        self.langgraph = langgraph
        self.writer, self.spin_us = writer, spin_us
        self.runtimes: dict[str, Runtime] = {}
        self.savers: dict[str, tuple[Any, Any]] = {}  # store -> (peer checkpointer, alt checkpointer)

    async def open(self, stack: AsyncExitStack) -> None:
        durable = SQLiteStore(self.tmp / "agentflow.db", writer=self.writer,  # type: ignore[arg-type]
                              writer_spin_us=self.spin_us)
        for store, target in (("memory", ":memory:"), ("durable", durable)):
            self.runtimes[store] = await stack.enter_async_context(Runtime(tools=[inc, inc_sync], store=target))
        if not self.langgraph:
            return
        import aiosqlite
        from langgraph.checkpoint.memory import InMemorySaver
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        conn = await stack.enter_async_context(aiosqlite.connect(self.tmp / "langgraph.db"))
        await conn.execute("PRAGMA synchronous = NORMAL")  # the same setting as agentflow's SQLiteStore
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        self.savers = {"memory": (None, InMemorySaver()), "durable": (saver, saver)}

    def sides(self, case: Case) -> list[Side]:
        rt, tool = self.runtimes[case.store], ("inc" if case.fn == "async" else "inc_sync")
        spec = af_chain(case.nodes, tool) if case.graph == "chain" else af_fanout(case.nodes, tool)
        sides = [Side("ours", _af_run(rt, af_chain(1, tool)), _af_run(rt, spec))]
        if self.langgraph:
            durable = case.store == "durable"
            peer, alt = self.savers[case.store]
            for column, saver, mode in (("peer", peer, "sync"), ("peer_alt", alt, "async")):
                kwargs = {"durability": mode} if durable else {}
                sides.append(Side(column, _lg_run(lg_graph("chain", 1, case.fn, saver), kwargs),
                                  _lg_run(lg_graph(case.graph, case.nodes, case.fn, saver), kwargs)))
        return sides


def _af_run(rt: Runtime, spec: WorkflowSpec) -> Run:
    async def run() -> dict[str, Any]:
        record = await rt.run(spec, {})
        assert record.status == "completed", record.error
        return record.output  # type: ignore[no-any-return]

    return run


def _lg_run(graph: Any, kwargs: dict[str, Any]) -> Run:
    async def run() -> dict[str, Any]:
        config = {"recursion_limit": 10_000, "configurable": {"thread_id": uuid.uuid4().hex}}
        return await graph.ainvoke({"count": 0, "items": []}, config, **kwargs)  # type: ignore[no-any-return]

    return run


async def _sample(run: Run, into: list[float]) -> None:
    gc.collect()
    start = time.perf_counter()
    await run()
    into.append(time.perf_counter() - start)


async def measure_case(case: Case, sides: list[Side], repeats: int) -> None:
    """Samples of all sides interleaved, so load from elsewhere on the machine hits them alike."""
    for side in sides:  # warm-up, and the check that both frameworks compute the same state
        await side.one()
        output = await side.graph()
        assert _normalised(output) == _expected(case.graph, case.nodes), (side.column, output)
    for _ in range(repeats):
        for side in sides:
            await _sample(side.one, side.t_one)
            await _sample(side.graph, side.t_graph)
    for side in sides:
        t_one, t_graph = statistics.median(side.t_one), statistics.median(side.t_graph)
        setattr(case, side.column, per_node_us(t_graph, t_one, _graph_nodes(case)))
        if repeats >= 2:
            each = [per_node_us(t, t_one, _graph_nodes(case)) for t in side.t_graph]
            q1, _, q3 = statistics.quantiles(each, n=4)
            case.spread[side.column] = (q1, q3)


async def throughput(nodes: int, runs: int, repeats: int, langgraph: bool) -> tuple[float, float | None]:
    """Runs/s for ``runs`` concurrent runs of the chain, in memory, async nodes: (agentflow, LangGraph)."""
    spec = af_chain(nodes, "inc")
    async with Runtime(tools=[inc], store=":memory:") as rt:

        async def ours() -> None:
            async with anyio.create_task_group() as tg:
                for _ in range(runs):
                    tg.start_soon(rt.run, spec, {})

        timers = {"ours": ours}
        if langgraph:
            graph = lg_graph("chain", nodes, "async", None)

            async def theirs() -> None:
                config = {"recursion_limit": 10_000}
                await asyncio.gather(*(graph.ainvoke({"count": 0, "items": []}, config) for _ in range(runs)))

            timers["theirs"] = theirs
        samples: dict[str, list[float]] = {name: [] for name in timers}
        for timer in timers.values():
            await timer()  # warm-up
        for _ in range(repeats):
            for name, timer in timers.items():
                gc.collect()
                start = time.perf_counter()
                await timer()
                samples[name].append(time.perf_counter() - start)
    rates = {name: runs / statistics.median(times) for name, times in samples.items()}
    return rates["ours"], rates.get("theirs")


# -- part 2: the engine workload ----------------------------------------------------------------------

@dataclass
class CountingLLM:
    """Passes calls through to ``inner``, counting calls and generated tokens."""

    inner: Any
    calls: int = 0
    tokens: int = 0

    async def stream(self, request: LLMRequest) -> AsyncIterator[TextDelta | LLMResult]:
        stream = self.inner.stream(request)
        try:
            async for item in stream:
                if isinstance(item, LLMResult):
                    self.calls += 1
                    self.tokens += item.completion_tokens
                yield item
        finally:
            await stream.aclose()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def lookup(query: str) -> str:
    """The workload's tool: 300 ms of waiting (a network call), then a fixed answer."""
    await anyio.sleep(TOOL_SLEEP_S)
    return TOOL_RESULT


def agent_spec() -> WorkflowSpec:
    nodes: list[dict[str, Any]] = []
    for k, prompt in enumerate(PROMPTS, start=1):
        template = prompt.format(run="{{ input.run }}", tag="{{ input.tag }}", result=f"{{{{ tool{k - 1} }}}}")
        nodes.append({"id": f"llm{k}", "kind": "llm", "prompt": template})
        nodes.append({"id": f"tool{k}", "kind": "tool", "tool": "lookup", "args": {"query": f"{{{{ llm{k} }}}}"}})
    edges = [{"from": a["id"], "to": b["id"]} for a, b in itertools.pairwise(nodes)]
    return WorkflowSpec.model_validate({
        "name": "three_tools", "nodes": nodes, "edges": edges, "output": "tool3",
        "defaults": {"sampling": {"max_tokens": NEW_TOKENS, "temperature": 0}}})


@dataclass
class EngineResult:
    makespan: list[float] = field(default_factory=list)
    generation: list[float] = field(default_factory=list)  # 3 batched rounds, no tools
    single: list[float] = field(default_factory=list)  # one run alone
    tokens_workflow: int = 0
    tokens_batched: int = 0
    calls_workflow: int = 0


async def engine_workload(runs: int, repeats: int, store: Path) -> EngineResult:
    from agentflow.llm.local import LocalEngine

    llm = CountingLLM(LocalEngine("demo"))
    spec = agent_spec()
    result = EngineResult()
    phases = ("alone", "batched", "makespan")
    steps = ["warm-up", *[f"{what} #{r + 1}" for r in range(repeats) for what in phases]]
    bar = tqdm(steps, desc="engine workload", unit="phase")
    async with Runtime(llm=llm, tools=[lookup], store=store) as rt:

        async def workflow(n: int, tag: str) -> float:
            start = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(_checked_run, rt, spec, {"run": i, "tag": tag})
            return time.perf_counter() - start

        async def batched(n: int, tag: str) -> float:
            start = time.perf_counter()
            for k, prompt in enumerate(PROMPTS):  # one round per llm node, all runs' calls at once
                async with anyio.create_task_group() as tg:
                    for i in range(n):
                        tg.start_soon(_generate, llm, prompt.format(run=i, tag=tag, result=TOOL_RESULT),
                                      f"{tag}:{i}:llm{k + 1}")
            return time.perf_counter() - start

        for step in bar:
            bar.set_postfix_str(step)
            rep = step.rsplit("#", 1)[-1]
            if step == "warm-up":
                await workflow(min(runs, 8), "warm-up")
            elif step.startswith("alone"):
                result.single.append(await workflow(1, f"alone{rep}"))
            elif step.startswith("batched"):
                before = llm.tokens
                result.generation.append(await batched(runs, f"batched{rep}"))
                result.tokens_batched = llm.tokens - before
            else:
                before, calls = llm.tokens, llm.calls
                result.makespan.append(await workflow(runs, f"makespan{rep}"))
                result.tokens_workflow, result.calls_workflow = llm.tokens - before, llm.calls - calls
    await llm.aclose()
    return result


async def _checked_run(rt: Runtime, spec: WorkflowSpec, run_input: dict[str, Any]) -> None:
    record = await rt.run(spec, run_input)
    assert record.status == "completed", record.error


async def _generate(llm: CountingLLM, prompt: str, session_id: str) -> None:
    await generate(llm, LLMRequest(messages=[{"role": "user", "content": prompt}], max_tokens=NEW_TOKENS,
                                   temperature=0, session_id=session_id))


# -- report -------------------------------------------------------------------------------------------

def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    right = [i > 0 and all(_numeric(r[i]) for r in rows) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = (c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True))
        return "| " + " | ".join(padded) + " |"

    rule = "| " + " | ".join("-" * (w - 1) + (":" if r else "-") for w, r in zip(widths, right, strict=True)) + " |"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _numeric(cell: str) -> bool:
    return cell.lstrip("-")[:1].isdigit() or cell in ("-", "n/a")


def _fmt(case: Case, column: str) -> str:
    us = getattr(case, column)
    if us is None:
        return "-"
    if column not in case.spread:
        return f"{us:,.1f}"
    q1, q3 = case.spread[column]
    return f"{us:,.1f} ({q1:,.0f}–{q3:,.0f})"


def overhead_table(cases: list[Case]) -> str:
    peer = any(c.peer is not None for c in cases)
    rows = []
    for c in cases:
        target: float | None = TARGET_US[c.store] if c.fn == "async" else None  # see TARGET_NOTE
        verdict = "-" if c.ours is None or target is None else ("ok" if c.ours <= target else "MISSED")
        graph = f"chain {c.nodes}" if c.graph == "chain" else f"fan-out {c.nodes} (+source, join)"
        fn = "async fn" if c.fn == "async" else "sync fn (worker thread)"
        row = [graph, fn, c.store, _fmt(c, "ours")]
        if peer:
            ratio = f"{c.peer / c.ours:.2f}x" if c.peer is not None and c.ours else "-"
            row += [_fmt(c, "peer"), ratio, _fmt(c, "peer_alt")]
        rows.append([*row, f"<= {target:g}" if target is not None else "-", verdict])
    header = ["graph", "node function", "store", "agentflow µs/node"]
    if peer:
        header += ["LangGraph µs/node", "LangGraph/agentflow", "LangGraph alt µs/node"]
    return _table([*header, "target", "agentflow"], rows)


def engine_table(r: EngineResult, runs: int) -> str:
    makespan, single = statistics.median(r.makespan), statistics.median(r.single)
    generation = statistics.median(r.generation)
    ideal = len(PROMPTS) * TOOL_SLEEP_S + generation
    sequential = runs * single
    rows = [["makespan (all runs at once)", f"{makespan:.2f}", ""],
            ["ideal = 3 x 0.3 s + batched generation", f"{ideal:.2f}", f"makespan / ideal {makespan / ideal:.3f} "
             f"(target <= {TARGET_MAKESPAN})"],
            [f"  batched generation: 3 rounds of {runs} concurrent calls, no tools", f"{generation:.2f}",
             f"makespan - it {makespan - generation:+.2f} s (time the tool waits were not hidden)"],
            [f"sequential = {runs} x one run alone (not run {runs} times)", f"{sequential:.2f}",
             f"sequential / makespan {sequential / makespan:.1f}x"],
            ["  one run alone", f"{single:.2f}", ""]]
    return _table(["engine workload", "seconds", "ratio"], rows)


def environment(langgraph: bool, loop: str) -> str:
    lg = importlib.metadata.version("langgraph") if langgraph else "not used"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        import torch

        device = f"CUDA {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "CPU only"
        engine = f"torch {torch.__version__} ({torch.get_num_threads()} threads, {device})"
    except ImportError:
        engine = "torch not installed"
    return (f"Python {platform.python_version()} ({platform.machine()}), agentflow "
            f"{importlib.metadata.version('agentflow')}, langgraph {lg}, "
            f"anyio {importlib.metadata.version('anyio')} on asyncio with the {loop} loop, {cpus} CPUs, {engine}; "
            f"load average {_load()}")


def _load() -> str:
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# -- main ---------------------------------------------------------------------------------------------

def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per overhead number, median taken (default 11; --quick 3)")
    parser.add_argument("--engine-repeats", type=int, default=None,
                        help="repeats of each engine-workload phase (default 3; --quick 1)")
    parser.add_argument("--nodes", type=int, default=None, help="chain length and fan-out width (default 100)")
    parser.add_argument("--runs", type=int, default=None, help="concurrent runs in the engine workload (default 64)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                        help="event loop for both frameworks (default: uvloop if installed, as agentflow's CLI does)")
    parser.add_argument("--writer", choices=["process", "thread"], default="process",
                        help="the durable store's writer (default: process, SQLiteStore's default)")
    parser.add_argument("--writer-spin-us", type=float, default=DEFAULT_SPIN_US,
                        help=f"the writer process's poll after each commit (default {DEFAULT_SPIN_US:g})")
    parser.add_argument("--skip-langgraph", action="store_true")
    parser.add_argument("--skip-engine", action="store_true")
    parser.add_argument("--quick", action="store_true", help="--nodes 20 --runs 8, fewer repeats")
    args = parser.parse_args()
    args.loop = choose_loop(args.loop)
    args.nodes = args.nodes or (20 if args.quick else 100)
    args.runs = args.runs or (8 if args.quick else 64)
    args.engine_repeats = args.engine_repeats or (1 if args.quick else 3)
    args.repeats = args.repeats or (3 if args.quick else 11)
    if args.nodes < 2 or args.runs < 1 or args.repeats < 1 or args.engine_repeats < 1:
        parser.error("--nodes must be at least 2; --runs and the repeats at least 1")
    return args


def _langgraph_available() -> bool:
    try:
        import aiosqlite  # noqa: F401
        import langgraph.checkpoint.sqlite.aio
        import langgraph.graph  # noqa: F401
    except ImportError as exc:
        print(f"note: LangGraph is not installed ({exc}); running agentflow alone. "
              "Install the bench extra: pip install -e '.[bench]'")
        return False
    return True


async def amain(args: argparse.Namespace) -> None:
    langgraph = not args.skip_langgraph and _langgraph_available()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(environment(langgraph, args.loop), flush=True)
    spin = f", polling {args.writer_spin_us:g} µs after each commit" if args.writer == "process" else ""
    print(f"agentflow's durable store: SQLiteStore with the writer {args.writer}{spin}", flush=True)
    cases = [Case(graph, fn, store, args.nodes) for store in ("memory", "durable") for graph in ("chain", "fanout")
             for fn in ("async", "sync")]
    with tempfile.TemporaryDirectory(prefix="bench-orchestrator-") as tmp_dir:
        tmp = Path(tmp_dir)
        async with AsyncExitStack() as stack:
            harness = Harness(tmp, langgraph, args.writer, args.writer_spin_us)
            await harness.open(stack)
            for case in tqdm(cases, desc="per-node overhead", unit="case"):
                await measure_case(case, harness.sides(case), args.repeats)
        ours_rps, theirs_rps = await throughput(args.nodes, args.runs, max(1, args.repeats // 2), langgraph)
        print(f"\nPer-node overhead: (run - run of a 1-node graph) / (nodes - 1), median of {args.repeats} after a "
              "warm-up (interquartile range of the per-repeat values in parentheses). LangGraph: no checkpointer "
              "(memory) / AsyncSqliteSaver durability=\"sync\" (durable); LangGraph alt: InMemorySaver (memory) / "
              "durability=\"async\", its default (durable). Both SQLite files WAL, synchronous=NORMAL. Samples of "
              "both frameworks are interleaved, so load from other processes skews both alike.\n")
        print(overhead_table(cases))
        print(f"\n{TARGET_NOTE}")
        theirs = "LangGraph n/a" if theirs_rps is None else \
            f"LangGraph {theirs_rps:,.1f} runs/s (agentflow/LangGraph {ours_rps / theirs_rps:.2f}x)"
        print(f"\n{args.runs} concurrent runs of the {args.nodes}-node chain, in memory, async nodes: "
              f"agentflow {ours_rps:,.1f} runs/s, {theirs}", flush=True)
        if not args.skip_engine:
            engine = await engine_workload(args.runs, args.engine_repeats, tmp / "engine.db")
            nodes = 2 * len(PROMPTS)
            print(f"\nEngine workload: {args.runs} runs x {nodes} nodes ({args.runs * nodes} nodes; per run "
                  f"{len(PROMPTS)} x llm with {NEW_TOKENS} new tokens (greedy, demo model) then a "
                  f"{TOOL_SLEEP_S * 1000:.0f} ms tool), durable SQLite store, on {'GPU' if _cuda() else 'CPU'}; "
                  f"median of {args.engine_repeats}. Tokens generated: {engine.tokens_workflow} in "
                  f"{engine.calls_workflow} calls by the workflows, {engine.tokens_batched} by the batched rounds"
                  f"{'' if engine.tokens_workflow == engine.tokens_batched else ' (they differ: read with care)'}.\n")
            print(engine_table(engine, args.runs))
    print(f"\nload average at the end: {_load()}")


def main() -> None:
    args = _args()
    run_on_loop(amain, args, loop=args.loop)


if __name__ == "__main__":
    main()
