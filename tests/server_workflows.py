"""Tool-only workflows the server tests share (no model needed): ``steps`` (four ``tick`` calls in a row,
each optionally slowed by ``delay``; output ``n + 4``), ``approval`` (an interrupt, then a tick; output the
approval value) and ``sleepy`` (a tool that naps a minute: a run that stays running until cancelled)."""

from __future__ import annotations

import anyio

STEPS = """
name: steps
description: four ticks in a row
input:
  type: object
  properties: {n: {type: integer}, delay: {type: number}}
  required: [n]
state:
  total: {type: integer, default: 0}
nodes:
  - id: a
    kind: tool
    tool: tick
    args: {x: "{{ input.n }}", delay: "{{ input.delay if input.delay is defined else 0 }}"}
    writes: total
  - id: b
    kind: tool
    tool: tick
    args: {x: "{{ state.total }}", delay: "{{ input.delay if input.delay is defined else 0 }}"}
    writes: total
  - id: c
    kind: tool
    tool: tick
    args: {x: "{{ state.total }}", delay: "{{ input.delay if input.delay is defined else 0 }}"}
    writes: total
  - id: d
    kind: tool
    tool: tick
    args: {x: "{{ state.total }}", delay: "{{ input.delay if input.delay is defined else 0 }}"}
    writes: total
edges:
  - {from: a, to: b}
  - {from: b, to: c}
  - {from: c, to: d}
output: state.total
"""

APPROVAL = """
name: approval
input: {type: object, properties: {amount: {type: integer}}, required: [amount]}
nodes:
  - id: ask
    kind: interrupt
    prompt: "Approve {{ input.amount }}?"
    schema: {type: object, properties: {approved: {type: boolean}}, required: [approved]}
  - {id: record, kind: tool, tool: tick, args: {x: "{{ input.amount }}"}}
edges:
  - {from: ask, to: record}
output: ask
"""

SLEEPY = """
name: sleepy
nodes:
  - {id: nap, kind: tool, tool: nap, args: {}}
"""


async def tick(x: int, delay: float = 0.0) -> int:
    if delay:
        await anyio.sleep(delay)
    return x + 1


async def nap() -> str:
    await anyio.sleep(60)
    return "woke"


__all__ = ["APPROVAL", "SLEEPY", "STEPS", "nap", "tick"]
