"""The example workflows in workflows/: each loads, validates against its tools, and runs on the real
demo engine (random weights, so the text is salad, but constrained decoding makes the structure hold).

The assertions are about structure: outputs match their schemas, a switch runs exactly the branch
its value names, a map keeps item order and really runs items at once, and what the Python tools
report is what the workflow routes on. A scripted LLM additionally drives every switch branch,
which the random model only reaches by chance.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import jsonschema
import pytest
import yaml

from agentflow.dsl.ir import LLMNode, WorkflowSpec
from agentflow.llm import LLMRequest, LLMResult, LocalEngine, TextDelta
from agentflow.runtime import EventBase, RunRecord, Runtime
from engine import AsyncEngine, Engine
from tests import background

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
NAMES = ("support_triage", "research_digest", "invoice_extraction")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _import_tools() -> ModuleType:
    """workflows/tools.py, imported from its path the way the CLI does (workflows/ is no package)."""
    spec = importlib.util.spec_from_file_location("agentflow_example_workflow_tools", WORKFLOWS / "tools.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tools = _import_tools()
TOOL_NAMES = frozenset(fn.__name__ for fn in tools.TOOLS)

try:
    from agentflow.dsl.yaml_loader import load_workflow as _load_workflow

    loader: Callable[[Path], WorkflowSpec] | None = _load_workflow
except ImportError:  # pragma: no cover - the YAML loader is being finished alongside
    loader = None


def load(name: str) -> WorkflowSpec:
    path = WORKFLOWS / f"{name}.yaml"
    if loader is not None:
        return loader(path)
    return WorkflowSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def seeded(spec: WorkflowSpec, seed: int) -> WorkflowSpec:
    """The workflow with ``defaults.sampling.seed`` set (nodes inherit it)."""
    data = spec.to_dict()
    data.setdefault("defaults", {}).setdefault("sampling", {})["seed"] = seed
    return WorkflowSpec.model_validate(data)


def llm_node(spec: WorkflowSpec, node_id: str) -> LLMNode:
    node = next(n for n in spec.nodes if n.id == node_id)
    assert isinstance(node, LLMNode)
    return node


def kind(event: EventBase) -> str:
    return str(getattr(event, "event", ""))


def seq_of(events: list[EventBase], event_kind: str, node: str) -> int:
    found = [e.seq for e in events if kind(e) == event_kind and e.node == node]
    assert len(found) == 1, f"{event_kind} {node}: {found}"
    return found[0]


def nodes_with(events: list[EventBase], event_kind: str) -> list[str]:
    return [e.node for e in events if kind(e) == event_kind and e.node is not None]


def output_of(events: list[EventBase], node: str) -> Any:
    return next(getattr(e, "output", None) for e in events if kind(e) == "node.completed" and e.node == node)


async def run(llm: Any, spec: WorkflowSpec, run_input: dict[str, Any]) -> tuple[RunRecord, list[EventBase]]:
    async with Runtime(llm=llm, tools=tools.TOOLS, store=":memory:") as rt:
        with anyio.fail_after(120):
            record = await rt.run(spec, run_input)
        events = [event async for event in rt.events(record.run_id)]
    assert record.status == "completed", record.error
    assert kind(events[-1]) == "run.completed"
    return record, events


@pytest.fixture(scope="module")
def llm(demo_path: Path) -> Iterator[LocalEngine]:
    """One demo engine for the module (built outside any event loop, so every test's loop can use it)."""
    async_engine = AsyncEngine(engine=Engine(str(demo_path), max_kv_tokens=16384))
    yield LocalEngine(async_engine)
    async_engine.shutdown()


class ScriptedLLM:
    """An LLM that answers each llm node from ``answers`` (by node id, as JSON) and any other call
    with a fixed sentence: it steers a workflow down the branch a test wants."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.requests: list[LLMRequest] = []

    async def stream(self, request: LLMRequest) -> AsyncIterator[TextDelta | LLMResult]:
        self.requests.append(request)
        node = (request.session_id or "").rsplit(":", 1)[-1]  # the runtime sends "run_id:node path"
        text = json.dumps(self.answers[node]) if node in self.answers else "Thanks; here is what we found."
        yield TextDelta(text)
        yield LLMResult(text=text, finish_reason="stop")

    async def aclose(self) -> None:
        pass


# -- every workflow ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_workflow_loads_and_validates_against_its_tools(name: str) -> None:
    from agentflow.dsl.yaml_loader import validate_yaml

    spec = load(name)
    assert spec.name == name
    assert validate_yaml((WORKFLOWS / f"{name}.yaml").read_text(encoding="utf-8"), tools=TOOL_NAMES) == []
    for node in spec.nodes:  # every schema an llm node constrains to is a valid JSON Schema
        if isinstance(node, LLMNode) and node.output_schema is not None:
            jsonschema.Draft202012Validator.check_schema(node.output_schema)


def test_tools_module_exports_typed_documented_functions() -> None:
    assert len(TOOL_NAMES) == len(tools.TOOLS)
    for fn in tools.TOOLS:
        assert fn.__doc__, fn.__name__
        assert "return" in fn.__annotations__, fn.__name__


# -- support_triage ---------------------------------------------------------------------------------

DESKS = {"billing": "billing_lookup", "bug": "bug_lookup", "account": "account_lookup"}
GENERIC_DESK = "faq_lookup"


def expected_lookup(desk: str, run_input: dict[str, str]) -> dict[str, Any]:
    """What the desk's tool returns for this input (the tools are deterministic)."""
    if desk == "billing_lookup":
        return dict(tools.lookup_invoices(run_input["customer_id"]))
    if desk == "bug_lookup":
        return dict(tools.search_known_issues(run_input["ticket"]))
    if desk == "account_lookup":
        return dict(tools.lookup_account(run_input["customer_id"]))
    return dict(tools.search_faq(run_input["ticket"]))


def check_triage(spec: WorkflowSpec, run_input: dict[str, str], record: RunRecord,
                 events: list[EventBase]) -> str:
    classification = output_of(events, "classify")
    jsonschema.validate(classification, llm_node(spec, "classify").output_schema or {})
    category = classification["category"]
    desk = DESKS.get(category, GENERIC_DESK)
    assert output_of(events, "route") == (category if category in DESKS else "default")
    assert nodes_with(events, "node.completed") == ["classify", "route", desk, "reply"]
    started = set(nodes_with(events, "node.started"))
    assert started == {"classify", "route", desk, "reply"}  # the other desks never started
    assert seq_of(events, "node.started", "reply") > seq_of(events, "node.completed", desk)
    out = record.output
    assert isinstance(out, dict)
    assert (out["category"], out["urgency"], out["summary"]) == (
        category, classification["urgency"], classification["summary"])
    assert out["lookup"] == expected_lookup(desk, run_input) == output_of(events, desk)
    assert isinstance(out["reply"], str) and out["reply"] == output_of(events, "reply")
    assert len(out["notes"]) == 3
    assert out["notes"][0] == f"classified as {category} (urgency {classification['urgency']})"
    assert out["notes"][2] == "reply drafted"
    return desk


TICKETS = [
    ({"ticket": "I was charged twice for May. Please refund the duplicate charge.", "customer_id": "C-1001"}, 0),
    ({"ticket": "The Android app crashes every time I upload a photo.", "customer_id": "C-1002"}, 1),
    ({"ticket": "I can't log in; the password reset email never arrives.", "customer_id": "C-1003"}, 2),
    ({"ticket": "What are your support hours?", "customer_id": "C-9999"}, 3),
]


@pytest.mark.parametrize(("run_input", "seed"), TICKETS)
async def test_support_triage_on_the_demo_model(llm: LocalEngine, run_input: dict[str, str], seed: int) -> None:
    spec = load("support_triage")
    record, events = await run(llm, seeded(spec, seed), run_input)
    check_triage(spec, run_input, record, events)


@pytest.mark.parametrize("category", ["billing", "bug", "account", "other"])
async def test_support_triage_routes_every_category(category: str) -> None:
    spec = load("support_triage")
    run_input = {"ticket": "The CSV export of my report times out.", "customer_id": "C-1002"}
    llm = ScriptedLLM({"classify": {"category": category, "urgency": "normal", "summary": "export times out"}})
    record, events = await run(llm, spec, run_input)
    desk = check_triage(spec, run_input, record, events)
    assert desk == DESKS.get(category, GENERIC_DESK)
    assert record.output is not None and record.output["lookup"]["found"] is True
    reply_prompt = llm.requests[-1].messages[-1]["content"]  # type: ignore[index]
    assert json.dumps(record.output["lookup"], ensure_ascii=False) in reply_prompt  # the reply sees the lookup


# -- research_digest --------------------------------------------------------------------------------

SOURCES = [
    {"title": "Recycling lithium batteries at scale",
     "text": "Hydrometallurgical recycling recovers lithium, cobalt and nickel from spent batteries. "
             "Plants in Europe now process 50,000 tonnes a year."},
    {"title": "Second life for EV packs",
     "text": "Before recycling, electric vehicle batteries can store solar power for a decade."},
    {"title": "Direct cathode recycling",
     "text": "Direct recycling keeps the cathode crystal intact, which saves energy compared with smelting."},
    {"title": "Collection is the bottleneck",
     "text": "Most small batteries never reach a recycling plant; deposit schemes raise collection rates."},
    {"title": "Sodium-ion outlook",
     "text": "Sodium-ion cells avoid lithium and cobalt altogether, which changes the economics of recycling."},
]


@pytest.mark.parametrize("seed", [0, 7])
async def test_research_digest_maps_sources_concurrently(llm: LocalEngine, seed: int) -> None:
    spec = load("research_digest")
    run_input = {"topic": "battery recycling", "sources": SOURCES}
    record, events = await run(llm, seeded(spec, seed), run_input)
    out = record.output
    assert isinstance(out, dict) and out["topic"] == "battery recycling"

    summaries = out["summaries"]
    assert [s["title"] for s in summaries] == [s["title"] for s in SOURCES]  # one per source, in order
    for i, (summary, source) in enumerate(zip(summaries, SOURCES, strict=True)):
        raw = output_of(events, f"per_source[{i}].summarise")
        assert isinstance(raw, str)
        assert summary == tools.score_source(source["title"], source["text"], raw, "battery recycling")
        assert summary["word_count"] == len(source["text"].split())
        assert 0 < summary["relevance"] <= 1 and summary["keywords"]
    assert out["keywords"] == sorted({k for s in summaries for k in s["keywords"]})

    # concurrency: item 1 starts before item 0 finishes, and never more than 4 items are in flight
    assert seq_of(events, "node.started", "per_source[1].summarise") < seq_of(
        events, "node.completed", "per_source[0].summarise")
    in_flight, peak = 0, 0
    for event in sorted(events, key=lambda e: e.seq):
        if kind(event) == "node.started" and str(event.node).endswith(".summarise"):
            in_flight += 1
            peak = max(peak, in_flight)
        elif kind(event) == "node.completed" and str(event.node).endswith(".score"):
            in_flight -= 1
    assert peak == 4

    assert isinstance(out["digest"], str) and out["digest"] == output_of(events, "combine")
    assert seq_of(events, "node.started", "combine") > seq_of(events, "node.completed", "per_source")


# -- invoice_extraction -----------------------------------------------------------------------------

DOCUMENTS = [
    ("ACME Tools Ltd\nInvoice INV-20931\nDate: 2024-03-05\n\n2x Hammer      40.00\nShipping       10.50\n"
     "Total (USD)    50.50", 0),
    ("Rechnung / Invoice INV-7781 from Müller GmbH, dated 2023-11-30. Consulting 1,200.00 EUR. "
     "Total due: 1,200.00 EUR.", 1),
    ("Northwind Traders - INV-000452 - 2024-01-17\nTea 12.00\nCoffee 18.00\nTotal GBP 30.00", 2),
]


def check_extraction(spec: WorkflowSpec, record: RunRecord, events: list[EventBase]) -> None:
    out = record.output
    assert isinstance(out, dict)
    jsonschema.validate(out["extracted"], llm_node(spec, "extract").output_schema or {})
    assert out["extracted"] == output_of(events, "extract")
    checked = tools.check_invoice(out["extracted"])
    assert (out["invoice"], out["issues"]) == (checked["invoice"], checked["issues"])
    assert all(isinstance(issue, str) for issue in out["issues"])
    flagged = bool(out["issues"])
    assert out["status"] == ("needs_review" if flagged else "accepted")
    assert output_of(events, "decide") == ("review" if flagged else "accept")
    ran, skipped = ("flag", "book") if flagged else ("book", "flag")
    started = nodes_with(events, "node.started")
    assert ran in started and skipped not in started
    result = output_of(events, ran)
    if flagged:
        assert tools.REVIEW_QUEUE[result["review_id"]]["issues"] == out["issues"]
    else:
        assert tools.LEDGER[result["ledger_id"]] == out["invoice"]


@pytest.mark.parametrize(("document", "seed"), DOCUMENTS)
async def test_invoice_extraction_on_the_demo_model(llm: LocalEngine, document: str, seed: int) -> None:
    spec = load("invoice_extraction")
    record, events = await run(llm, seeded(spec, seed), {"document": document})
    check_extraction(spec, record, events)


CLEAN_INVOICE = {"vendor": "ACME Tools Ltd", "invoice_number": "INV-20931", "date": "2024-03-05",
                 "currency": "USD", "total": 50.5,
                 "line_items": [{"description": "2x Hammer", "amount": 40},
                                {"description": "Shipping", "amount": 10.5}]}


@pytest.mark.parametrize(("invoice", "status"), [
    (CLEAN_INVOICE, "accepted"),
    ({**CLEAN_INVOICE, "total": 55.5}, "needs_review"),
    ({**CLEAN_INVOICE, "date": "2023-02-30"}, "needs_review"),
])
async def test_invoice_extraction_routes_on_the_checks(invoice: dict[str, Any], status: str) -> None:
    spec = load("invoice_extraction")
    record, events = await run(ScriptedLLM({"extract": invoice}), spec, {"document": "(scripted)"})
    check_extraction(spec, record, events)
    assert record.output is not None and record.output["status"] == status


def test_check_invoice_finds_and_normalises() -> None:
    ok = tools.check_invoice({**CLEAN_INVOICE, "vendor": "  ACME\tTools  Ltd ", "invoice_number": "inv-20931"},
                             today="2024-04-01")
    assert ok["issues"] == []
    assert ok["invoice"]["vendor"] == "ACME Tools Ltd" and ok["invoice"]["invoice_number"] == "INV-20931"
    bad = tools.check_invoice({**CLEAN_INVOICE, "date": "2024-02-30", "total": 50.125,
                               "line_items": [{"description": "((", "amount": 50.12}]}, today="2024-04-01")
    assert bad["issues"] == [
        "date '2024-02-30' is not a valid calendar date",
        "total 50.125 has fractions of a cent; rounded to 50.12",  # 50.125 is exact in binary: half to even
        "line item 1 has no readable description",
    ]
    future = tools.check_invoice(CLEAN_INVOICE, today="2024-03-04")
    assert future["issues"] == ["date 2024-03-05 is in the future"]


# -- the command line -------------------------------------------------------------------------------


def test_cli_validates_the_folder() -> None:
    done = subprocess.run([sys.executable, "-m", "agentflow.cli", "validate",
                           *(f"workflows/{name}.yaml" for name in NAMES)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


CLI_INPUT = {"ticket": "My invoice shows the wrong amount.", "customer_id": "C-1002"}
background.register("cli-support-triage", __name__,
                    [sys.executable, "-m", "agentflow.cli", "run", "workflows/support_triage.yaml", "--input",
                     json.dumps(CLI_INPUT), "--model", "demo", "--no-store", "-q"], timeout=240)


@pytest.mark.slow
def test_cli_runs_a_workflow_with_its_tools_file() -> None:
    """`agentflow run` picks up workflows/tools.py by itself (as the README says) and prints the output."""
    run_input = CLI_INPUT
    done = background.result("cli-support-triage")  # run from the repository root when collection ended
    assert done.returncode == 0, done.stdout + done.stderr
    output = json.loads(done.stdout)
    desk = DESKS.get(output["category"], GENERIC_DESK)
    assert output["lookup"] == expected_lookup(desk, run_input)
    assert isinstance(output["reply"], str)
