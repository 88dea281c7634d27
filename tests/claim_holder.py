"""Driver of ``tests/test_run_claims.py``: a second process on the same SQLite store.

    python tests/claim_holder.py STORE MODE RUN_ID

``claim``: claim RUN_ID on the store, print ``held`` and sleep until killed.
``run``: start a run of ``block`` (:data:`WORKFLOWS`) with id RUN_ID; its tool node ``work`` prints ``working``
and waits until the file ``STORE.go`` exists. Exits 0 when the run completes.
``resume``: answer the interrupt ``ask`` of the ``asking`` run RUN_ID with ``true``; ``work`` then runs and
waits the same way.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import yaml

from agentflow.dsl.ir import WorkflowSpec
from agentflow.runtime import Runtime
from agentflow.runtime.store import SQLiteStore

WORKFLOWS = ["""
name: block
nodes: [{id: work, kind: tool, tool: work}]
output: work
""", """
name: asking
nodes:
  - {id: ask, kind: interrupt, prompt: "go?", value_schema: {type: boolean}}
  - {id: work, kind: tool, tool: work}
edges: [{from: ask, to: work}]
output: work
"""]


def workflows() -> list[WorkflowSpec]:
    return [WorkflowSpec.model_validate(yaml.safe_load(text)) for text in WORKFLOWS]


def make_work(store: str) -> Callable[[], int]:
    def work() -> int:
        with open(store + ".calls", "a") as calls:
            calls.write("work\n")
        print("working", flush=True)
        while not Path(store + ".go").exists():
            time.sleep(0.02)
        return 1

    return work


async def main(store_path: str, mode: str, run_id: str) -> int:
    if mode == "claim":
        store = SQLiteStore(store_path)
        assert store.claim(run_id)
        print("held", flush=True)
        await anyio.sleep(3600)
        return 0
    async with Runtime(store=store_path, workflows=workflows(), tools=[make_work(store_path)],
                       recover=False) as rt:
        if mode == "run":
            await rt.start("block", {}, run_id=run_id)
        else:
            await rt.resume(run_id, True)
        record = await rt.wait(run_id)
        return 0 if record.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3]))
