"""Lint and type-check as part of the suite, so the README's one test command covers them (mypy runs in the
background from the end of collection: ``tests/background.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests import background

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean() -> None:
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_is_clean() -> None:
    done = background.result("mypy")
    assert done.returncode == 0, done.stdout + done.stderr
