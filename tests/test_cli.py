"""The ``agentflow`` console script, run as a real subprocess."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine import Engine, Request, SamplingParams
from tests import background


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentflow.cli", *args], capture_output=True, text=True,
                          timeout=300, check=False)


GENERATE = ["generate", "--model", "demo", "--prompt", "Hello there", "--max-new-tokens", "12", "--seed", "42",
            "--temperature", "0.7"]
GENERATE_CHAT = ["generate", "--model", "demo", "--chat", "--system", "Be brief.", "--prompt", "Hi",
                 "--max-new-tokens", "6", "--temperature", "0"]
for _name, _args in (("cli-generate", GENERATE), ("cli-generate-chat", GENERATE_CHAT)):
    background.register(_name, __name__, [sys.executable, "-m", "agentflow.cli", *_args], timeout=300)


@pytest.mark.slow
def test_generate_streams_what_the_engine_generates(demo_path) -> None:  # type: ignore[no-untyped-def]
    done = background.result("cli-generate")  # GENERATE, started when collection ended
    assert done.returncode == 0, done.stderr
    expected = Engine("demo", max_kv_tokens=1024).generate(
        ["Hello there"], SamplingParams(max_new_tokens=12, seed=42, temperature=0.7))[0]
    assert done.stdout.rstrip("\n") == expected.text
    assert "12 tokens" in done.stderr and "finish_reason=length" in done.stderr


@pytest.mark.slow
def test_generate_chat_applies_the_template(demo_path) -> None:  # type: ignore[no-untyped-def]
    done = background.result("cli-generate-chat")  # GENERATE_CHAT
    assert done.returncode == 0, done.stderr
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    expected = Engine("demo", max_kv_tokens=1024).generate(
        [Request(messages=messages, params=SamplingParams(max_new_tokens=6, temperature=0))])[0]
    assert done.stdout.rstrip("\n") == expected.text


def test_errors_are_one_clear_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    done = run_cli("generate", "--model", str(tmp_path / "missing"), "--prompt", "x")
    assert done.returncode == 2
    assert "error:" in done.stderr and "missing" in done.stderr and "Traceback" not in done.stderr
    bad = run_cli("generate", "--model", "demo", "--prompt", "x", "--top-p", "0")
    assert bad.returncode == 2 and "top_p" in bad.stderr and "Traceback" not in bad.stderr


def test_console_script_is_installed() -> None:
    done = subprocess.run(["agentflow", "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.startswith("agentflow ")
