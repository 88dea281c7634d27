"""``bench/orchestrator.py`` on tiny graphs, with each of the durable store's writers: the script runs end
to end and fills every row of its table. It checks that the numbers exist, not what they are (timings
have no place in tests)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_quick_run_fills_the_overhead_table(writer: str) -> None:
    proc = subprocess.run([sys.executable, "bench/orchestrator.py", "--quick", "--skip-langgraph", "--skip-engine",
                           "--repeats", "1", "--nodes", "5", "--writer", writer], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"SQLiteStore with the writer {writer}" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if re.match(r"\| (chain|fan-out) 5", line)]
    assert len(rows) == 8, proc.stdout
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        # a number, whatever its value: at 5 nodes and one repeat, noise can put the overhead below 0
        assert math.isfinite(float(cells[3].replace(",", "").split()[0])), row
    assert re.search(r"agentflow [\d,.]+ runs/s", proc.stdout)
