"""The programs in examples/ run as a user runs them (a subprocess each): the SDK examples against a
real server on 127.0.0.1, the in-process one on the built-in demo model."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from agentflow.server import ServerConfig
from tests import background
from tests.serving import free_port, running_server

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_server(ServerConfig(model=None, store=":memory:")) as url:
        yield url


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=EXAMPLES.parent)


def final(stdout: str) -> tuple[str, object]:
    """The example's last line, ``status: output`` with the output as JSON."""
    status, _, rest = stdout.strip().splitlines()[-1].partition(": ")
    return status, json.loads(rest)


@pytest.mark.parametrize("decision", ["--approve", "--reject"])
def test_the_expense_approval_example_sums_asks_and_records(server: str, decision: str) -> None:
    amounts = ["120.50", "89.99", "7"]
    done = run("examples/sdk_expense_approval.py", *amounts, decision, "--url", server)
    assert done.returncode == 0, done.stderr
    status, output = final(done.stdout)
    assert status == "completed"
    assert output == {"total": float(sum(map(Decimal, amounts))), "approved": decision == "--approve"}
    assert "run.interrupted" in done.stdout and "run.resumed" in done.stdout


def test_the_expense_example_explains_an_unreachable_server() -> None:
    done = run("examples/sdk_expense_approval.py", "1", "--approve", "--url", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 2 and "cannot reach the server" in done.stderr


def test_the_parallel_runs_example_follows_every_run(server: str) -> None:
    done = run("examples/sdk_parallel_runs.py", "--runs", "5", "--url", server)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("5 of 5 runs completed")
    results = dict(re.findall(r"^run (\d+): \[[\d, ]+\] -> (\[[\d, ]+\])", done.stdout, re.M))
    assert {int(i): json.loads(squares) for i, squares in results.items()} == {
        i: [n * n for n in range(i, i + 4)] for i in range(5)}


background.register("example-local-triage", __name__,
                    [sys.executable, "examples/local_triage.py", "I was charged twice for May", "--model", "demo"],
                    timeout=180)


@pytest.mark.slow
def test_the_local_triage_example_runs_on_the_demo_model() -> None:
    done = background.result("example-local-triage")  # run from the repository root when collection ended
    assert done.returncode == 0, done.stderr
    status, output = final(done.stdout)
    assert status == "completed" and isinstance(output, dict)
    category, notes = output["category"], output["notes"]
    expected = {"billing": "INV-2026-05-001", "bug": "BUG-", "other": None}[category]
    assert (notes == []) if expected is None else any(expected in note for note in notes)
    assert "llm.delta" in done.stdout and "run.completed" in done.stdout
