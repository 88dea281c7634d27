"""Counting event-loop turns: proof that the loop stayed free while something else (a commit, a big
write) was under way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio


@dataclass
class Turns:
    count: int = 0


@asynccontextmanager
async def counting_loop_turns() -> AsyncIterator[Turns]:
    """Inside the block, a task that only yields counts each turn the loop gives it in ``count``."""
    turns = Turns()
    stop = anyio.Event()

    async def tick() -> None:
        # A short sleep, not sleep(0): trio's sleep(0) never waits in the kernel, so a task spinning on it
        # holds the GIL and a writer *thread* commits in 5 ms slices (two minutes for 5000 rows).
        while not stop.is_set():
            turns.count += 1
            await anyio.sleep(0.0005)

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        await anyio.sleep(0)
        try:
            yield turns
        finally:
            stop.set()
