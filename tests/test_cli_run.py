"""``agentflow run`` / ``resume`` / ``validate`` as real subprocesses, on tool-only workflows (no model
loads) written to tmp_path with a ``tools.py`` beside them; one slow test runs an llm node on the demo
model. The view and loader helpers are also tested in-process."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from agentflow.discovery import DiscoveryError, load_tools, load_workflows, module_tools
from agentflow.live_view import RunState, describe, render
from agentflow.runtime.events import (
    LLMDelta,
    NodeCompleted,
    NodeFailed,
    NodeStarted,
    RunCompleted,
    RunStarted,
    ToolCall,
    ToolResult,
)
from tests.specs import TWO_ASKS

CLI = [sys.executable, "-m", "agentflow.cli"]

TOOLS = '''
import json  # imported names are not tools
from pathlib import Path
from os.path import join

MARKS = Path(__file__).with_name("marks.txt")


def _mark(name: str) -> int:
    with MARKS.open("a") as f:
        f.write(name + "\\n")
    return MARKS.read_text().split().count(name)


def double(x: int) -> int:
    return 2 * x


def echo(value):
    return value


def boom(reason: str):
    raise RuntimeError(f"kaboom: {reason}")


def step(n: int) -> int:
    _mark(f"step{n}")
    return n


def nap(n: int) -> int:
    import time
    if _mark(f"nap{n}") == 1:
        time.sleep(60)  # the first attempt hangs until the process is killed
    return n
'''

CHAIN = """
name: chain
input: {type: object, properties: {n: {type: integer}}, required: [n]}
nodes:
  - {id: doubled, kind: tool, tool: double, args: {x: "{{ input.n }}"}}
  - {id: said, kind: tool, tool: echo, args: {value: "got {{ doubled }}"}}
edges: [{from: doubled, to: said}]
output: {total: doubled, said: said}
"""

FAILING = """
name: failing
nodes:
  - {id: fine, kind: tool, tool: echo, args: {value: 1}}
  - {id: explode, kind: tool, tool: boom, args: {reason: "no luck"}}
edges: [{from: fine, to: explode}]
"""

APPROVE = """
name: approve
input: {type: object, properties: {n: {type: integer}}}
nodes:
  - {id: draft, kind: tool, tool: step, args: {n: "{{ input.n }}"}}
  - {id: ask, kind: interrupt, prompt: "Approve {{ draft }}?", schema: {type: object, required: [ok]}}
  - {id: final, kind: tool, tool: echo, args: {value: {ok: "{{ ask.ok }}", n: "{{ draft }}"}}}
edges: [{from: draft, to: ask}, {from: ask, to: final}]
output: final
"""

STEPS = """
name: steps
nodes:
  - {id: one, kind: tool, tool: step, args: {n: 1}}
  - {id: two, kind: tool, tool: nap, args: {n: 2}}
  - {id: three, kind: tool, tool: step, args: {n: 3}}
edges: [{from: one, to: two}, {from: two, to: three}]
output: {one: one, three: three}
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def workflow(tmp_path: Path, text: str, name: str = "wf") -> Path:
    """``text`` as ``<name>/<name>.yaml`` with the shared tools.py beside it."""
    directory = tmp_path / name
    directory.mkdir(exist_ok=True)
    (directory / "tools.py").write_text(TOOLS)
    path = directory / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def marks(path: Path) -> list[str]:
    file = path.parent / "marks.txt"
    return file.read_text().split() if file.exists() else []


def env_for(home: Path) -> dict[str, str]:
    return {**os.environ, "AGENTFLOW_HOME": str(home), "COLUMNS": "120"}


def cli(home: Path, *args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False,
                          env=env_for(home), **kw)


def assert_clean(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr, done.stderr


# ---- run ----------------------------------------------------------------------------------------------------

def test_run_prints_the_output_json_and_progress_naming_nodes(tmp_path: Path, home: Path) -> None:
    done = cli(home, "run", str(workflow(tmp_path, CHAIN)), "--input", '{"n": 21}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"total": 42, "said": "got 42"}
    assert done.stdout.startswith('{\n  "total": 42')  # indent 2
    lines = done.stderr.splitlines()  # stderr is a pipe: one plain line per event, no rich panel
    assert any(line.startswith("doubled: done") for line in lines), done.stderr
    assert any(line.startswith("said: calls echo") for line in lines), done.stderr
    assert "\x1b[" not in done.stderr
    assert (home / "runs.db").is_file()  # the default store follows AGENTFLOW_HOME


def test_built_in_tools_work_beside_a_tools_py(tmp_path: Path, home: Path) -> None:
    # the folder of a workflow's tools.py goes on sys.path, where its module could pass for the package
    # `tools` that holds the built-ins; run from elsewhere, as a user would, not from the repository root
    path = workflow(tmp_path, """
        name: calc
        nodes:
          - {id: c, kind: tool, tool: calculator, args: {expression: "2 ** 10"}}
          - {id: d, kind: tool, tool: double, args: {x: 3}}
        edges: [{from: c, to: d}]
        output: {c: c, d: d}
        """)
    done = cli(home, "run", str(path), "--no-store", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"c": 1024, "d": 6}


def test_quiet_prints_only_the_output(tmp_path: Path, home: Path) -> None:
    done = cli(home, "run", str(workflow(tmp_path, CHAIN)), "--input", '{"n": 2}', "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert json.loads(done.stdout) == {"total": 4, "said": "got 4"}


def test_a_failing_tool_exits_1_naming_the_node(tmp_path: Path, home: Path) -> None:
    done = cli(home, "run", str(workflow(tmp_path, FAILING)), "--no-store")
    assert done.returncode == 1
    assert done.stdout == ""
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("error: run ") and "failed" in error
    assert "'explode'" in error and "kaboom: no luck" in error
    assert_clean(done)


def test_bad_input_json_exits_2_naming_the_position(tmp_path: Path, home: Path) -> None:
    done = cli(home, "run", str(workflow(tmp_path, CHAIN)), "--input", '{"n": 21,}')
    assert done.returncode == 2
    assert "--input is not valid JSON" in done.stderr and "line 1, column 10" in done.stderr
    assert_clean(done)
    missing = cli(home, "run", str(workflow(tmp_path, CHAIN)), "--input-file", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "nope.json" in missing.stderr
    assert_clean(missing)


def test_input_not_matching_the_schema_exits_2(tmp_path: Path, home: Path) -> None:
    done = cli(home, "run", str(workflow(tmp_path, CHAIN)), "--input", '{"n": "many"}')
    assert done.returncode == 2
    assert "invalid input" in done.stderr and "/n" in done.stderr
    assert done.stdout == ""
    assert_clean(done)


def test_an_invalid_workflow_is_not_run(tmp_path: Path, home: Path) -> None:
    path = workflow(tmp_path, CHAIN.replace("tool: echo", "tool: ecko"))  # unknown tool, caught with its line
    done = cli(home, "run", str(path), "--input", '{"n": 1}')
    assert done.returncode == 2
    assert re.search(rf"^{re.escape(str(path))}:6:\d+: unknown_tool: .*ecko", done.stderr, re.M), done.stderr
    assert "nothing was run" in done.stderr
    assert_clean(done)
    gone = cli(home, "run", str(tmp_path / "missing.yaml"))
    assert gone.returncode == 2 and "missing.yaml: no such file" in gone.stderr


def test_events_jsonl_replaces_the_output(tmp_path: Path, home: Path) -> None:
    done = cli(home, "run", str(workflow(tmp_path, CHAIN)), "--input", '{"n": 1}', "--events-jsonl", "--quiet")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["event"] == "run.started" and events[-1]["event"] == "run.completed"
    assert events[-1]["output"] == {"total": 2, "said": "got 2"}
    assert {"node.started", "tool.call", "tool.result", "node.completed"} <= {e["event"] for e in events}


def test_sub_workflows_beside_the_file_are_registered(tmp_path: Path, home: Path) -> None:
    parent = workflow(tmp_path, """
        name: parent
        nodes:
          - {id: call, kind: workflow, workflow: chain, input: {n: 5}}
        output: call
        """)
    (parent.parent / "chain.yaml").write_text(CHAIN)
    (parent.parent / "broken.yaml").write_text("name: [\n")  # skipped with a warning
    done = cli(home, "run", str(parent), "--no-store")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"total": 10, "said": "got 10"}
    assert "skipping workflow" in done.stderr and "broken.yaml" in done.stderr


# ---- interrupts, resume, durability -------------------------------------------------------------------------

def test_an_interrupt_without_a_terminal_exits_3_and_the_printed_command_resumes(tmp_path: Path,
                                                                                    home: Path) -> None:
    path = workflow(tmp_path, APPROVE)
    done = cli(home, "run", str(path), "--input", '{"n": 7}')
    assert done.returncode == 3, done.stderr
    assert done.stdout == ""
    assert "waits at 'ask': Approve 7?" in done.stderr
    command = shlex.split(next(line for line in done.stderr.splitlines() if "agentflow resume" in line))
    assert command[:2] == ["agentflow", "resume"] and command[command.index("--value") + 1] == "<JSON>"
    command[command.index("--value") + 1] = '{"ok": true}'
    resumed = subprocess.run([*CLI, *command[1:]], capture_output=True, text=True, timeout=60, check=False,
                             env={**os.environ, "AGENTFLOW_HOME": str(tmp_path / "elsewhere")}, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == {"ok": True, "n": 7}
    assert marks(path) == ["step7"]  # `draft` ran once
    again = cli(home, *command[1:])
    assert again.returncode == 2 and "already completed" in again.stderr


def test_a_bad_resume_value_exits_2(tmp_path: Path, home: Path) -> None:
    path = workflow(tmp_path, APPROVE)
    done = cli(home, "run", str(path), "--input", '{"n": 1}', "--run-id", "r-approve")
    assert done.returncode == 3
    tools = ["--tools", str(path.parent / "tools.py")]
    bad = cli(home, "resume", "r-approve", "--value", '{"nope": 1}', *tools)
    assert bad.returncode == 2 and "'ok' is a required property" in bad.stderr
    unknown = cli(home, "resume", "r-nothing", "--value", "1", *tools)
    assert unknown.returncode == 2 and "no run 'r-nothing'" in unknown.stderr
    assert_clean(bad)
    assert_clean(unknown)


SUB_PARENT = """
name: sub_parent
nodes:
  - {id: call, kind: workflow, workflow: sub_child}
output: call
"""

SUB_CHILD = """
name: sub_child
nodes:
  - {id: ask, kind: interrupt, prompt: "number?", schema: {type: integer}}
output: ask
"""


def test_resume_without_a_workflow_the_run_needs_exits_2_and_keeps_it_interrupted(tmp_path: Path,
                                                                                   home: Path) -> None:
    path = workflow(tmp_path, SUB_PARENT, "sub_parent")
    (path.parent / "sub_child.yaml").write_text(SUB_CHILD)
    assert cli(home, "run", str(path), "--run-id", "r-sub").returncode == 3
    bare = cli(home, "resume", "r-sub", "--value", "5")  # no --workflows: sub_child is unknown
    assert bare.returncode == 2, bare.stderr
    assert "'sub_child'" in bare.stderr and "--workflows" in bare.stderr
    assert_clean(bare)
    bad = cli(home, "resume", "r-sub", "--value", '"abc"', "--workflows", str(path.parent))
    assert bad.returncode == 2 and "not of type 'integer'" in bad.stderr  # the child's schema applies
    done = cli(home, "resume", "r-sub", "--value", "5", "--workflows", str(path.parent))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == 5


def test_resume_without_the_tools_the_run_needs_exits_2_and_keeps_it_interrupted(tmp_path: Path,
                                                                                 home: Path) -> None:
    # it used to be recovered, failed for good on "unknown tool 'echo'", and then reported "already failed"
    path = workflow(tmp_path, APPROVE)
    assert cli(home, "run", str(path), "--input", '{"n": 2}', "--run-id", "r-tools").returncode == 3
    bare = cli(home, "resume", "r-tools", "--value", '{"ok": true}', cwd=tmp_path)  # no tools.py here
    assert bare.returncode == 2, bare.stderr
    assert "'echo'" in bare.stderr and "--tools" in bare.stderr
    assert_clean(bare)
    done = cli(home, "resume", "r-tools", "--value", '{"ok": true}', "--tools", str(path.parent / "tools.py"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"ok": True, "n": 2}


def test_continuing_a_killed_run_without_its_tools_exits_2_with_the_tools_hint(tmp_path: Path,
                                                                                home: Path) -> None:
    path = workflow(tmp_path, APPROVE)
    assert cli(home, "run", str(path), "--input", '{"n": 4}', "--run-id", "r-killed").returncode == 3
    with sqlite3.connect(home / "runs.db") as db:  # as if killed while running
        db.execute("UPDATE runs SET status = 'running' WHERE run_id = 'r-killed'")
    bare = cli(home, "resume", "r-killed", cwd=tmp_path)  # no tools.py here: 'echo' is unknown
    assert bare.returncode == 2, bare.stderr
    assert "cannot be continued here" in bare.stderr and "'echo'" in bare.stderr and "--tools" in bare.stderr
    assert_clean(bare)


def test_an_interrupt_on_a_terminal_asks_for_the_value(tmp_path: Path, home: Path) -> None:
    primary, secondary = pty.openpty()
    try:
        os.write(primary, b'not json\n{"ok": false}\n')  # typed ahead; the terminal buffers it
        done = cli(home, "run", str(workflow(tmp_path, APPROVE)), "--input", '{"n": 3}', stdin=secondary)
    finally:
        os.close(primary)
        os.close(secondary)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"ok": False, "n": 3}
    assert "value (JSON" in done.stderr and "not valid JSON" in done.stderr


def test_a_run_waiting_at_two_interrupts_asks_for_both_on_a_terminal(tmp_path: Path, home: Path) -> None:
    # the first answer used to be sent without naming its interrupt: a traceback, then a hang
    primary, secondary = pty.openpty()
    try:
        os.write(primary, b'"first"\n"second"\n')
        done = cli(home, "run", str(workflow(tmp_path, TWO_ASKS)), "--no-store", stdin=secondary)
    finally:
        os.close(primary)
        os.close(secondary)
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(done.stdout).values()) == ["first", "second"]
    assert "Legal OK?" in done.stderr and "Finance OK?" in done.stderr
    assert_clean(done)


def _wait_for(predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _completed_nodes(db: Path, run_id: str) -> list[str]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT node FROM events WHERE run_id = ? AND name = 'node.completed' ORDER BY seq",
                                (run_id,)).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    return [node for (node,) in rows]


def test_a_killed_run_continues_with_the_same_run_id(tmp_path: Path, home: Path) -> None:
    path = workflow(tmp_path, STEPS)
    db = tmp_path / "store" / "runs.db"
    args = [*CLI, "run", str(path), "--run-id", "durable-1", "--store", str(db)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=env_for(home))
    try:
        _wait_for(lambda: "nap2" in marks(path) and _completed_nodes(db, "durable-1") == ["one"])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = cli(home, "run", str(path), "--run-id", "durable-1", "--store", str(db))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"one": 1, "three": 3}
    assert marks(path) == ["step1", "nap2", "nap2", "step3"]  # `one` did not run again; `two` re-ran
    assert "continuing from its checkpoints" in done.stderr
    assert _completed_nodes(db, "durable-1") == ["one", "two", "three"]
    assert not (home / "runs.db").exists()  # --store wins over AGENTFLOW_HOME
    repeat = cli(home, "run", str(path), "--run-id", "durable-1", "--store", str(db), "--quiet")
    assert repeat.returncode == 0 and json.loads(repeat.stdout) == {"one": 1, "three": 3}
    assert len(marks(path)) == 4  # a finished run is reported, not run again


def test_ctrl_c_leaves_the_run_resumable(tmp_path: Path, home: Path) -> None:
    path = workflow(tmp_path, STEPS)
    proc = subprocess.Popen([*CLI, "run", str(path), "--run-id", "stop-1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env_for(home))
    try:
        _wait_for(lambda: "nap2" in marks(path))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    command = shlex.split(err.strip().splitlines()[-1])
    assert command[:2] == ["agentflow", "run"] and "--run-id" in command and "stop-1" in command
    done = cli(home, *command[1:])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"one": 1, "three": 3}
    assert marks(path).count("step1") == 1


# ---- validate -----------------------------------------------------------------------------------------------

BROKEN = """\
name: broken
nodes:
  - {id: a, kind: tool, tool: echo, args: {value: 1}}
  - {id: a, kind: tool, tool: echo, args: {value: 2}}
  - {id: b, kind: tool, tool: echo, args: {value: "{{ missing_node }}"}}
edges:
  - {from: a, to: nowhere}
  - {from: a, to: b}
"""


def test_validate_prints_every_problem_with_line_and_column(tmp_path: Path, home: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    (tmp_path / "tools.py").write_text(TOOLS)  # validate checks tools against those beside the file
    syntax = tmp_path / "syntax.yaml"
    syntax.write_text("name: x\nnodes: [\n")
    good = workflow(tmp_path, CHAIN)
    done = cli(home, "validate", str(broken), str(syntax), str(good))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    expected = [(broken, 4, "duplicate_id", "/nodes/1/id"), (broken, 5, "unknown_variable", "/nodes/2/args/value"),
                (broken, 7, "unknown_node", "/edges/0/to")]
    for (file, line, code, pointer), got in zip(expected, lines, strict=False):
        assert re.fullmatch(rf"{re.escape(str(file))}:{line}:\d+: {code}: .+ \(at {re.escape(pointer)}\)", got), got
    assert re.fullmatch(rf"{re.escape(str(syntax))}:3:1: yaml_syntax: .+", lines[3])
    assert lines[4] == f"{good}: ok"
    assert lines[5] == "4 problem(s) in 2 of 3 file(s)"


def test_validate_ok_and_missing_files(tmp_path: Path, home: Path) -> None:
    good = workflow(tmp_path, CHAIN)
    done = cli(home, "validate", str(good))
    assert done.returncode == 0 and done.stdout.splitlines() == [f"{good}: ok", "1 file(s) ok"]
    missing = cli(home, "validate", str(good), str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "nope.yaml: no such file" in missing.stderr
    assert_clean(missing)


# ---- in process: tool modules, workflow scanning, the view ---------------------------------------------------

def test_tool_modules_give_TOOLS_or_the_public_functions_defined_there(tmp_path: Path) -> None:
    (tmp_path / "mytools.py").write_text(TOOLS)  # imports json, Path, join: none of them is a tool
    registry, sources = load_tools([str(tmp_path / "mytools.py")], None)
    assert registry.names() == ["boom", "double", "echo", "nap", "step"]
    assert sources == [str((tmp_path / "mytools.py").resolve())]
    module = types.ModuleType("user_tools")
    module.__dict__.update(registry=registry, TOOLS=[registry.get("echo"), len])
    assert [t.name for t in module_tools(module)] == ["echo", "len"]
    (tmp_path / "bad.py").write_text("def broken(:\n")
    with pytest.raises(DiscoveryError, match="SyntaxError"):
        load_tools([str(tmp_path / "bad.py")], None)
    with pytest.raises(DiscoveryError, match="no such file or module"):
        load_tools(["no_such_module_here"], None)


def test_load_workflows_skips_the_main_file_and_broken_ones(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "chain.yaml").write_text(CHAIN)
    (tmp_path / "main.yaml").write_text(FAILING)
    (tmp_path / "broken.yml").write_text(BROKEN)
    specs, dirs = load_workflows([tmp_path], skip=tmp_path / "main.yaml")
    assert [s.name for s in specs] == ["chain"] and dirs == [str(tmp_path.resolve())]
    assert "broken.yml" in caplog.text


def test_the_live_panel_shows_nodes_streams_and_tool_calls() -> None:
    state = RunState()
    base = {"run_id": "r1", "time": 100.0}
    events = [RunStarted(seq=1, workflow="demo", version=1, **base),
              NodeStarted(seq=2, node="fetch", kind="tool", attempt=1, **base),
              ToolCall(seq=3, node="fetch", tool="http_get", call_id="c1", arguments={"url": "https://x"}, **base),
              ToolResult(seq=4, node="fetch", tool="http_get", call_id="c1", result={"status": 200}, duration=0.5,
                         **base),
              NodeCompleted(seq=5, node="fetch", output={"status": 200}, duration=0.5, **base),
              NodeStarted(seq=6, node="write", kind="llm", attempt=2, **base),
              *[LLMDelta(seq=7 + i, node="write", text=f"tok{i} ", **base) for i in range(60)]]
    for event in events:
        state.apply(event)
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(render(state, now=103.0))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert re.search(r"fetch\s+tool\s+done", text) and re.search(r"write\s+llm\s+running\s+2\s+3\.0s", text)
    assert "tok59" in text and "tok1 " not in text  # only the tail of the stream
    assert 'http_get({"url": "https://x"})' in text and '{"status": 200}' in text
    state.apply(NodeFailed(seq=70, node="write", error="OutputError: bad", error_type="OutputError", **base))
    state.apply(RunCompleted(seq=71, output=None, **base))
    assert state.rows["write"].state == "failed" and state.status == "completed" and not state.streams
    assert describe(events[2]) == 'fetch: calls http_get({"url": "https://x"})'
    assert describe(events[-1]) is None


# ---- with the demo model ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_an_llm_node_on_the_demo_model_streams(tmp_path: Path, home: Path, demo_path: Path) -> None:
    path = workflow(tmp_path, """
        name: greet
        input: {type: object, properties: {name: {type: string}}}
        nodes:
          - {id: hello, kind: llm, prompt: "Say hello to {{ input.name }}", sampling: {max_tokens: 8, temperature: 0}}
          - {id: shout, kind: tool, tool: echo, args: {value: "{{ hello | upper }}"}}
        edges: [{from: hello, to: shout}]
        output: {text: hello, loud: shout}
        """)
    done = cli(home, "run", str(path), "--input", '{"name": "Ada"}', "--model", "demo", "--events-jsonl",
               timeout=300)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    deltas = "".join(e["text"] for e in events if e["event"] == "llm.delta")
    output = events[-1]["output"]
    assert events[-1]["event"] == "run.completed" and output["text"] == deltas and output["loud"] == deltas.upper()
    assert "hello: done" in done.stderr


def test_cli_edges_broken_pipe_bad_numbers_typos(tmp_path: Path, home: Path) -> None:
    path = workflow(tmp_path, STEPS)
    # a reader that leaves after one line: stopped as by SIGPIPE, resumable, no traceback
    proc = subprocess.Popen([*CLI, "run", str(path), "--run-id", "p1", "--events-jsonl", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            env=env_for(home))
    assert proc.stdout is not None and proc.stderr is not None
    assert json.loads(proc.stdout.readline())["event"] == "run.started"
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 128 + signal.SIGPIPE, err
    assert "Traceback" not in err and "run p1 is saved" in err
    # NaN is not JSON, here as on the server
    nan = cli(home, "run", str(workflow(tmp_path, CHAIN)), "--input", '{"n": NaN}', "--no-store")
    assert nan.returncode == 2 and "--input is not valid JSON" in nan.stderr
    # a mistyped checkpoint folder is a usage error before anything runs
    talk = workflow(tmp_path, "name: talk\nnodes: [{id: a, kind: llm, prompt: hi}]\n", "talk")
    typo = cli(home, "run", str(talk), "--model", "./no/such/model")
    assert typo.returncode == 2 and "no such directory" in typo.stderr
    # resume does not create a store it was pointed at by mistake
    stray = tmp_path / "typo.db"
    done = cli(home, "resume", "p1", "--store", str(stray), "--value", "1")
    assert done.returncode == 2 and "no run store at" in done.stderr and not stray.exists()
    # validate checks every file, and tools against those `run` would load
    unknown = workflow(tmp_path, "name: u\nnodes: [{id: a, kind: tool, tool: no_such_tool}]\n", "u")
    checked = cli(home, "validate", str(tmp_path / "missing.yaml"), str(unknown), str(workflow(tmp_path, CHAIN)))
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "missing.yaml: no such file" in checked.stderr and "unknown_tool" in checked.stdout
    assert f"{tmp_path / 'wf' / 'wf.yaml'}: ok" in checked.stdout
