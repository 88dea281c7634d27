"""Start many runs at once with the async SDK and follow every one's events concurrently.

    agentflow serve &                          # no model needed: this workflow only calls tools
    python examples/sdk_parallel_runs.py --runs 8 --url http://127.0.0.1:8000

Each run squares a list of numbers with the built-in calculator, one map item per number, all items
at once on the server; this program follows all the runs' event streams in one task group and
prints each run's result as it finishes.
"""

from __future__ import annotations

import argparse
import sys

import anyio

from agentflow.client import APIConnectionError, APIError, AsyncClient

SQUARES = """
name: squares
description: Square every number, all at once
input:
  type: object
  properties: {numbers: {type: array, items: {type: integer}}}
  required: [numbers]
nodes:
  - id: each
    kind: map
    over: input.numbers
    concurrency: 16
    body:
      nodes:
        - {id: square, kind: tool, tool: calculator, args: {expression: "{{ item }} ** 2"}}
output: each
"""


async def follow(af: AsyncClient, numbers: list[int], results: dict[int, list[int]], index: int) -> None:
    run = await af.runs.create("squares", {"numbers": numbers})
    tools = 0
    async for event in af.runs.events(run.run_id):
        if event.event == "tool.result":
            tools += 1
        elif event.event == "run.completed":
            results[index] = event.output
            print(f"run {index}: {numbers} -> {event.output} ({tools} tool calls, {event.seq} events)")
        elif event.event in ("run.failed", "run.cancelled"):
            print(f"run {index}: {event.event}: {getattr(event, 'error', '')}", file=sys.stderr)


async def main(url: str | None, runs: int) -> int:
    results: dict[int, list[int]] = {}
    async with AsyncClient(url) as af:
        try:
            await af.workflows.register(SQUARES)
            async with anyio.create_task_group() as tg:
                for i in range(runs):
                    tg.start_soon(follow, af, list(range(i, i + 4)), results, i)
        except APIConnectionError as exc:
            print(f"cannot reach the server: {exc}\nstart one with `agentflow serve`", file=sys.stderr)
            return 2
        except APIError as exc:
            print(f"the server refused: {exc}", file=sys.stderr)
            return 1
    print(f"{len(results)} of {runs} runs completed")
    return 0 if len(results) == runs else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="the server (default $AGENTFLOW_URL or http://127.0.0.1:8000)")
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    sys.exit(anyio.run(main, args.url, args.runs))
