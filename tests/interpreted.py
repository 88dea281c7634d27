"""Kernel cases run by Triton's CPU interpreter, in a child process.

``TRITON_INTERPRET`` is read when a kernel is decorated, so it must be set before the kernel module
is imported, and it must not leak into the rest of the session (GPU tests would run interpreted).
A kernel test module therefore runs its cases in one child (``python -m tests.<module>``, whose
``__main__`` calls ``report``), started in the background when collection ends (``tests/background.py``),
and its tests assert one case's result each (``run_cases``).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests import background


def report(cases: dict[str, dict[str, Any]], check: Callable[[str, dict[str, Any]], str]) -> None:
    """Child side: run every case, print one JSON object {case: error or ''}."""
    results = {}
    for name, spec in cases.items():
        try:
            results[name] = check(name, spec)
        except Exception as e:  # report, so the parent shows which case and why
            results[name] = f"{type(e).__name__}: {e}"
    sys.stdout.write(json.dumps(results) + "\n")


def run_cases(module: str, what: str) -> dict[str, str]:
    """Parent side: the child's results; skips when triton is missing."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip(f"triton is not installed (pip install triton==3.6.0): {what} cannot be checked")
    proc = background.result(module)  # started when collection ended (tests/background.py)
    if proc.returncode != 0 or not proc.stdout.strip():
        if "No module named 'triton'" in proc.stderr:
            pytest.skip("triton is not importable in a child process")
        pytest.fail(f"the interpreter run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
