"""A workflow in Python, run in-process: the Python builder, typed @tool functions, a JSON-schema LLM
step, a switch, and the runtime's live events, on the built-in demo model (or any model).

    python examples/local_triage.py "I was charged twice for May" --model demo
    python examples/local_triage.py "The app crashes on start" --model ~/models/Qwen2.5-0.5B-Instruct

The demo model has random weights, so its category is a guess; constrained decoding still makes its
JSON valid, so the run routes, calls a tool and finishes. Runs are kept in memory (store=":memory:");
pass --store runs.db to keep them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Literal

import anyio
from pydantic import BaseModel

from agentflow import Runtime, Workflow, tool
from agentflow.llm import resolve_llm
from agentflow.runtime.events import LLMDelta


class Category(BaseModel):
    category: Literal["billing", "bug", "other"]


@tool(side_effects=False)
def lookup_invoices(ticket: str) -> list[str]:
    """Find the invoices a billing ticket is about.

    Args:
        ticket: The customer's message.
    """
    return ["INV-2026-05-001 (paid)", "INV-2026-05-002 (paid, same amount)"] if "twice" in ticket else []


@tool(side_effects=False)
def search_issues(query: str) -> list[str]:
    """Search the bug tracker.

    Args:
        query: Keywords.
    """
    return [f"BUG-{abs(hash(query)) % 1000}: crash reports matching {query!r}"]


def triage() -> Workflow:
    wf = Workflow("triage", description="Classify a support ticket and gather notes for the reply",
                  input={"type": "object", "properties": {"ticket": {"type": "string"}}, "required": ["ticket"]})
    wf.state("notes", type="array", reducer="append")
    classify = wf.llm("classify", "Classify this support ticket: {{ input.ticket }}", output_schema=Category,
                      max_tokens=24)
    route = wf.switch("route", "classify.category", cases={"billing": "invoices", "bug": "issues"},
                      default="no_notes")
    wf.tool("invoices", lookup_invoices, {"ticket": "{{ input.ticket }}"}, writes="notes")
    wf.tool("issues", search_issues, {"query": "{{ input.ticket }}"}, writes="notes")
    wf.end("no_notes")
    classify >> route
    wf.output({"category": "classify.category", "notes": "state.notes"})
    return wf


async def main(ticket: str, model: str, store: str) -> int:
    workflow = triage()
    async with Runtime(llm=resolve_llm(model), tools=workflow.tools, store=store) as rt:
        run_id = await rt.start(workflow.build(), {"ticket": ticket})
        async for event in rt.events(run_id):  # replayed from the store, then live
            text = f" {event.text!r}" if isinstance(event, LLMDelta) else ""
            print(f"#{event.seq:<3} {getattr(event, 'event', '?'):<15} {event.node or ''}{text}")
        run = await rt.wait(run_id)
    print(f"{run.status}: {json.dumps(run.output) if run.status == 'completed' else run.error}")
    return 0 if run.status == "completed" else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ticket")
    parser.add_argument("--model", default="demo", help="demo, a checkpoint folder, or openai:<model>@<url>")
    parser.add_argument("--store", default=":memory:")
    args = parser.parse_args()
    sys.exit(anyio.run(main, args.ticket, args.model, args.store))
