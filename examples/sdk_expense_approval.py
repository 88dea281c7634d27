"""Drive an agentflow server with the Python SDK: register a workflow, start a run, follow its
events live, answer its approval step, and read the result.

    agentflow serve &                          # no model needed: this workflow only calls tools
    python examples/sdk_expense_approval.py 120.50 89.99 --approve
    python examples/sdk_expense_approval.py 2500 --reject --url http://host:8000   # API key: $AGENTFLOW_API_KEY

The workflow is written with the Python builder and registered over HTTP; the server adds it as a
new version if it knows the name already. Without --approve/--reject you are asked on the terminal.
"""

from __future__ import annotations

import argparse
import json
import sys

from agentflow import Workflow
from agentflow.client import APIConnectionError, APIError, Client


def expense_workflow() -> Workflow:
    """Sum the amounts with the built-in calculator, ask a person to approve, then record the decision."""
    wf = Workflow("expense_approval", description="Sum an expense claim and ask for approval",
                  input={"type": "object", "required": ["amounts"],
                         "properties": {"amounts": {"type": "array", "items": {"type": "number"}, "minItems": 1}}})
    total = wf.tool("total", "calculator", {"expression": "{{ input.amounts | join(' + ') }}"})
    ask = wf.interrupt("approve", "Approve an expense claim of {{ total }}?",
                       schema={"type": "object", "properties": {"approved": {"type": "boolean"}},
                               "required": ["approved"]})
    total >> ask
    wf.output({"total": "total", "approved": "approve.approved"})
    return wf


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("amounts", nargs="+", type=float, help="the claim's amounts")
    parser.add_argument("--url", help="the server (default $AGENTFLOW_URL or http://127.0.0.1:8000)")
    decision = parser.add_mutually_exclusive_group()
    decision.add_argument("--approve", action="store_true")
    decision.add_argument("--reject", action="store_true")
    args = parser.parse_args()

    with Client(args.url) as af:
        try:
            registered = af.workflows.register(expense_workflow())
            print(f"registered {registered.name} v{registered.version}")
            run = af.runs.create("expense_approval", {"amounts": args.amounts})
            print(f"run {run.run_id} started")
            for event in af.runs.events(run.run_id):  # live; reconnects by itself if the connection drops
                print(f"  #{event.seq:<3} {event.event:<16} {event.node or ''}")
                if event.event == "run.interrupted":
                    approved = args.approve or (not args.reject and _ask(event.prompt))
                    af.runs.resume(run.run_id, {"approved": approved})
            done = af.runs.get(run.run_id)
        except APIConnectionError as exc:
            print(f"cannot reach the server: {exc}\nstart one with `agentflow serve`", file=sys.stderr)
            return 2
        except APIError as exc:
            print(f"the server refused: {exc}", file=sys.stderr)
            return 1
    print(f"{done.status}: {json.dumps(done.output) if done.status == 'completed' else done.error}")
    return 0 if done.status == "completed" else 1


def _ask(prompt: str) -> bool:
    if not sys.stdin.isatty():
        print("no terminal to ask on; pass --approve or --reject", file=sys.stderr)
        return False
    return input(f"{prompt} [y/N] ").strip().lower() in ("y", "yes")


if __name__ == "__main__":
    sys.exit(main())
