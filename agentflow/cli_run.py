"""``agentflow run`` and ``agentflow resume``: workflows from the terminal (``validate``: ``cli_validate``).

::

    agentflow run workflows/triage.yaml --input '{"ticket": "..."}'   # progress on stderr, output JSON on stdout
    agentflow resume 3f2a9c... --value '{"ok": true}'                 # an interrupted run, from the store
    agentflow validate workflows/*.yaml                                 # every problem, with line:column

Exit codes: 0 completed (validate: no problems); 1 the run failed or was cancelled (validate:
problems found); 2 usage, input or workflow errors (validate: a file could not be read); 3 the run
waits at an interrupt and there is no terminal to ask on; 128 + N stopped by signal N (Ctrl-C: 130;
a closed stdout pipe: 141), the run left resumable.

Tools: each ``--tools`` entry is a Python file or an importable module, and a ``tools.py`` beside the
workflow file is loaded too. A module contributes its ``TOOLS`` list if it defines one, else every
public function defined in it (functions it imports are not tools).

Sub-workflows: every ``*.yaml`` / ``*.yml`` in the workflow file's own directory and in each
``--workflows DIR`` is registered for ``workflow`` nodes; files that fail to load are skipped with a
warning.

Store: ``--store PATH`` (SQLite), else ``$AGENTFLOW_HOME/runs.db``, else ``runs.db`` in the user data
directory; ``--no-store`` keeps the run in memory (it cannot be resumed). Only the run a command
names is continued (``--run-id`` / ``resume``): other unfinished runs in the file belong to other
processes and are left alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sqlite3
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import platformdirs

from agentflow import jsondata
from agentflow.cli_ask import UNSET, ask
from agentflow.discovery import DiscoveryError, load_tools, load_workflows, module_tools
from agentflow.dsl.errors import ValidationIssue, WorkflowValidationError
from agentflow.dsl.ir import AgentNode, LLMNode, SwitchNode, WorkflowSpec
from agentflow.dsl.yaml_loader import load_workflow
from agentflow.errors import AgentflowError
from agentflow.live_view import View, ViewMode, make_view
from agentflow.llm import LLM, resolve_llm
from agentflow.runtime import InvalidInputError, NoLLMError, RunRecord, Runtime
from agentflow.runtime.errors import ToolNotFoundError, WorkflowNotFoundError
from agentflow.runtime.events import RunInterrupted
from agentflow.runtime.loop import run as run_on_loop
from agentflow.runtime.store import FINISHED, MemoryStore, RunStore, SQLiteStore, StoreError
from agentflow.tool import ToolRegistry

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 3
DEFAULT_MODEL = "demo"
VALUE_PLACEHOLDER = "<JSON>"
"""Stands for the resume value in the ``agentflow resume`` command printed at an interrupt."""


class UsageError(Exception):
    """An expected mistake (bad flag value, bad JSON, unknown run ...): one line on stderr, exit 2."""


# ---- the argument parser -----------------------------------------------------------------------------------

def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``run`` and ``resume`` to the ``agentflow`` parser (``validate``: ``cli_validate``)."""
    about = _plain(__doc__ or "")
    run = sub.add_parser("run", help="run a workflow file in this process, with a live view",
                         description=about, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("file", help="workflow file (.yaml, .yml or .json)")
    given = run.add_mutually_exclusive_group()
    given.add_argument("--input", metavar="JSON", help="the run's input as JSON (default: {})")
    given.add_argument("--input-file", metavar="PATH", help="read the input JSON from a file ('-': stdin)")
    run.add_argument("--run-id", metavar="ID", help="continue this run if the store holds it unfinished, else "
                     "start a new run with this id")
    _add_shared(run)
    run.set_defaults(run=cmd_run)

    resume = sub.add_parser("resume", help="resume an interrupted (or stopped) run from the store",
                            description=about, formatter_class=argparse.RawDescriptionHelpFormatter)
    resume.add_argument("run_id", metavar="RUN_ID")
    resume.add_argument("--value", metavar="JSON", help="the value for the interrupt the run waits at ('-': stdin; "
                        "without it, a terminal is asked)")
    resume.add_argument("--node", metavar="PATH", help="the interrupt to answer, when the run waits at several "
                        "(parallel branches); default: the one it names")
    _add_shared(resume, memory=False)
    resume.set_defaults(run=cmd_resume)



def _plain(doc: str) -> str:
    """A docstring as --help text: without reST markup."""
    return doc.replace("``", "").replace("::\n\n", "")


def _add_shared(parser: argparse.ArgumentParser, memory: bool = True) -> None:
    parser.add_argument("--model", metavar="SPEC", help="LLM for every llm/agent/switch node: 'demo', a checkpoint "
                        "path, 'openai:<model>@<url>' ... (default: each node's model, else 'demo')")
    parser.add_argument("--tools", action="append", default=[], metavar="PY_FILE_OR_MODULE",
                        help="tools module (repeatable); a tools.py beside the workflow file is loaded too")
    parser.add_argument("--workflows", action="append", default=[], metavar="DIR",
                        help="register every *.yaml there for `workflow` nodes (repeatable)")
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--store", metavar="PATH", help="SQLite run store (default: $AGENTFLOW_HOME/runs.db or the "
                       "user data directory)")
    if memory:
        store.add_argument("--no-store", action="store_true", help="keep the run in memory only (not resumable)")
    else:
        parser.set_defaults(no_store=False)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr, only the output")
    parser.add_argument("--events-jsonl", action="store_true",
                        help="write every event as one JSON line to stdout instead of the output")


# ---- problems in a workflow file (``validate`` prints them too) --------------------------------------------

def format_issue(source: str, issue: ValidationIssue) -> str:
    """``FILE:LINE:COL: CODE: message (at POINTER)``."""
    where = f"{source}:{issue.line}:{issue.column or 1}" if issue.line is not None else source
    at = f" (at {issue.pointer})" if issue.pointer else ""
    return f"{where}: {issue.code}: {issue.message}{at}"


# ---- run and resume: everything resolved before the event loop starts ----------------------------------------

@dataclass
class Session:
    """What a run or resume needs, resolved from the command line."""

    tools: ToolRegistry
    workflows: list[WorkflowSpec]
    store: Path | None
    """The SQLite file; None keeps runs in memory."""
    model: str | None
    view: ViewMode
    events_jsonl: bool
    interactive: bool
    """stdin is a terminal: ask for interrupt values instead of exiting with 3."""
    flags: list[str] = field(default_factory=list)
    """Flags that name the same store, model, tools and workflows again, for the commands we print."""


@dataclass
class Job:
    command: Literal["run", "resume"]
    run_id: str | None
    spec: WorkflowSpec | None = None
    input: Any = None
    value: Any = UNSET
    file: str = ""
    node: str | None = None
    """Which interrupt ``value`` answers (``resume --node``), when the run waits at several."""


def cmd_run(args: argparse.Namespace) -> int:
    try:
        path = Path(args.file)
        if not path.is_file():
            raise UsageError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
        run_input = _read_input(args.input, args.input_file)  # before any user code is imported
        session = _session(args, path.parent)
        try:
            spec = load_workflow(path, tools=session.tools, workflows=session.workflows)  # specs: cycles are found
        except WorkflowValidationError as exc:
            for issue in exc.issues:
                sys.stderr.write(format_issue(str(path), issue) + "\n")
            sys.stderr.write(f"error: {path}: {len(exc.issues)} problem(s); nothing was run\n")
            return EXIT_USAGE
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if session.model and needs_llm([spec, *session.workflows]):
            _check_model(session.model)
    except UsageError as exc:
        return _usage(exc)
    return execute(session, Job("run", args.run_id, spec=spec, input=run_input, file=str(Path(path).resolve())))


def cmd_resume(args: argparse.Namespace) -> int:
    try:
        session = _session(args, None)
        value = UNSET if args.value is None else _parse_json(
            sys.stdin.read() if args.value == "-" else args.value, "--value")
        if session.model:
            _check_model(session.model)
    except UsageError as exc:
        return _usage(exc)
    return execute(session, Job("resume", args.run_id, value=value, node=args.node))


def _session(args: argparse.Namespace, workflow_dir: Path | None) -> Session:
    if args.quiet:
        logging.getLogger().setLevel(logging.ERROR)
    auto = workflow_dir / "tools.py" if workflow_dir is not None else None
    try:
        tools, tool_sources = load_tools(args.tools, auto if auto is not None and auto.is_file() else None)
    except DiscoveryError as exc:
        raise UsageError(str(exc)) from None
    dirs = [Path(d) for d in args.workflows]
    for d in dirs:
        if not d.is_dir():
            raise UsageError(f"--workflows {d}: not a directory")
    workflows, used_dirs = load_workflows([*dirs, *([workflow_dir] if workflow_dir is not None else [])],
                                          skip=Path(args.file) if workflow_dir is not None else None, tools=tools)
    store = None if args.no_store else Path(args.store).expanduser() if args.store else default_store_path()
    flags = ["--store", str(store.resolve())] if store is not None and (args.store or "AGENTFLOW_HOME" in os.environ) \
        else []
    flags += ["--model", args.model] if args.model else []
    for source in tool_sources:
        flags += ["--tools", source]
    for used in used_dirs:
        flags += ["--workflows", used]
    quiet_view: ViewMode = "quiet"
    return Session(tools=tools, workflows=workflows, store=store, model=args.model,
                   view=quiet_view if args.quiet else "live" if sys.stderr.isatty() else "plain",
                   events_jsonl=args.events_jsonl, interactive=sys.stdin.isatty(), flags=flags)


def default_store_path() -> Path:
    """``$AGENTFLOW_HOME/runs.db``, else ``runs.db`` in the platform's user data directory."""
    home = os.environ.get("AGENTFLOW_HOME")
    base = Path(home).expanduser() if home else Path(platformdirs.user_data_dir("agentflow"))
    return base / "runs.db"


def _parse_json(text: str, what: str) -> Any:
    try:
        return jsondata.loads(text)  # strict: NaN and Infinity are not JSON (the server refuses them too)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}") from None


def _read_input(text: str | None, file: str | None) -> Any:
    if file is not None:
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--input-file {file}: {getattr(exc, 'strerror', None) or exc}") from None
        return _parse_json(text, f"--input-file {file}")
    return None if text is None else _parse_json(text, "--input")


def _check_model(spec: str) -> None:
    try:
        resolve_llm(spec)  # cheap: backends connect or load on first use
    except ValueError as exc:
        raise UsageError(f"--model: {exc}") from None
    check_model_path(spec)


def check_model_path(spec: str) -> None:
    """A local checkpoint ``--model`` names must be there now, not when the first LLM node runs (a run
    continued with a typo would fail for good)."""
    path = spec.strip()[6:] if spec.strip().startswith("local:") else spec.strip()
    if path == "demo" or not (path.startswith(("/", "./", "../", "~")) or os.path.exists(path)):
        return
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UsageError(f"--model: {folder} is not a directory" if folder.exists() else f"--model: {folder}: no such "
                         "directory (a Hugging Face checkpoint folder, 'demo', or openai:<model>@<url>)")
    if not (folder / "config.json").is_file():
        raise UsageError(f"--model: {folder} holds no config.json; is it a Hugging Face checkpoint folder?")


def needs_llm(specs: Iterable[WorkflowSpec]) -> bool:
    """Whether any node of these workflows calls an LLM (llm, agent, or switch with a prompt)."""
    def walk(nodes: Iterable[Any]) -> bool:
        for node in nodes:
            if isinstance(node, (LLMNode, AgentNode)) or (isinstance(node, SwitchNode) and node.prompt is not None):
                return True
            bodies = [getattr(node, "body", None), *getattr(node, "branches", {}).values()]
            if any(body is not None and walk(body.nodes) for body in bodies):
                return True
        return False

    return any(walk(spec.nodes) for spec in specs)


# ---- the event loop ----------------------------------------------------------------------------------------

class _LLMPool:
    """The runtime's LLM source: ``--model`` for every node when given, else the node's own model name
    (``demo`` when it names none); each backend is built on first use, so tool-only runs build none."""

    def __init__(self, override: str | None) -> None:
        self.override = override
        self.built: dict[str, LLM] = {}

    def __call__(self, model: str | None) -> LLM:
        spec = self.override or model or DEFAULT_MODEL
        if spec not in self.built:
            try:
                self.built[spec] = resolve_llm(spec)
            except ValueError as exc:
                raise NoLLMError(f"{exc}; choose one with --model") from None
        return self.built[spec]

    async def close_all(self) -> None:
        for spec, llm in self.built.items():
            try:
                await llm.aclose()
            except Exception as exc:
                logger.warning("closing LLM %s failed: %s", spec, exc)


class _OneRunStore(SQLiteStore):
    """A SQLite store whose ``unfinished_runs`` (what a runtime recovers on entry) is only the named run."""

    def __init__(self, path: Path, only: str | None) -> None:
        super().__init__(path)
        self.only = only

    async def unfinished_runs(self) -> list[RunRecord]:
        return [r for r in await super().unfinished_runs() if r.run_id == self.only]


@dataclass
class _Outcome:
    code: int = EXIT_USAGE
    run_id: str | None = None
    signal: int = 0
    at_prompt: bool = False
    scope: anyio.CancelScope | None = None
    """The command's scope: cancelled to stop it as a signal does."""

    def stop(self, signum: int) -> None:
        self.signal = signum
        if self.scope is not None:
            self.scope.cancel()


def execute(session: Session, job: Job) -> int:
    """Run the job's event loop; stopped by a signal, print how to continue and exit 128 + signal."""
    outcome = _Outcome()
    try:
        run_on_loop(_main, session, job, outcome)
    except KeyboardInterrupt:  # before the signal handlers were installed
        outcome.signal = signal.SIGINT
    if not outcome.signal:
        return outcome.code
    sys.stderr.write("\n" + _stopped_message(session, job, outcome) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + outcome.signal)  # abandoned tool threads must not keep the process alive


def _stopped_message(session: Session, job: Job, outcome: _Outcome) -> str:
    if outcome.run_id is None:
        return "stopped before a run started"
    if session.store is None:
        return f"stopped; run {outcome.run_id} was kept in memory only (--no-store) and is lost"
    if outcome.at_prompt:
        command = _resume_command(session, outcome.run_id)
        return f"stopped; run {outcome.run_id} waits for a value. Resume it with:\n  {command}"
    if job.command == "resume":
        command = shlex.join(["agentflow", "resume", outcome.run_id, *session.flags])
    else:
        command = shlex.join(["agentflow", "run", job.file, "--run-id", outcome.run_id, *session.flags])
    return f"stopped; run {outcome.run_id} is saved. Continue it with:\n  {command}"


def _resume_command(session: Session, run_id: str) -> str:
    return shlex.join(["agentflow", "resume", run_id, "--value", VALUE_PLACEHOLDER, *session.flags])


async def _main(session: Session, job: Job, outcome: _Outcome) -> None:
    view = make_view(session.view, job.spec, sys.stderr)
    async with anyio.create_task_group() as tg:
        outcome.scope = tg.cancel_scope
        tg.start_soon(_watch_signals, tg.cancel_scope, outcome)
        try:
            outcome.code = await _drive(session, job, view, outcome)
        finally:
            view.stop()
        tg.cancel_scope.cancel()


async def _watch_signals(scope: anyio.CancelScope, outcome: _Outcome) -> None:
    try:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                outcome.signal = int(signum)
                scope.cancel()
                return
    except NotImplementedError:  # no signal handlers on this platform's loop: Ctrl-C raises KeyboardInterrupt
        await anyio.sleep_forever()


def _open_store(path: Path | None, run_id: str | None) -> RunStore:
    if path is None:
        return MemoryStore()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return _OneRunStore(path, run_id)
    except (OSError, sqlite3.Error, StoreError) as exc:
        raise UsageError(f"cannot open the run store {path}: {exc}") from None


async def _drive(session: Session, job: Job, view: View, outcome: _Outcome) -> int:
    if job.command == "resume" and session.store is not None and not session.store.exists():
        return _usage(UsageError(f"no run store at {session.store} (--store names the file `run` wrote)"))
    try:
        store = _open_store(session.store, job.run_id)
    except UsageError as exc:
        return _usage(exc)
    llms = _LLMPool(session.model)
    try:
        async with Runtime(llm=llms, tools=session.tools, workflows=session.workflows, store=store,
                           recover=job.run_id is not None) as rt:
            try:
                run_id = await _begin(rt, job, session)
            except (UsageError, AgentflowError) as exc:
                return _usage(exc)
            outcome.run_id = run_id
            record = await _follow(rt, run_id, view, session, outcome)
    finally:
        with anyio.CancelScope(shield=True):
            await llms.close_all()
    view.stop()
    return _report(record, session)


async def _begin(rt: Runtime, job: Job, session: Session) -> str:
    """Start the run, or pick up the stored run the job names; return its id."""
    assert rt.store is not None
    record = await rt.store.get_run(job.run_id) if job.run_id is not None else None
    if record is None:
        if job.command == "resume" or job.spec is None:
            raise UsageError(f"no run {job.run_id!r} in {session.store or 'memory'}")
        try:
            return await rt.start(job.spec, job.input, run_id=job.run_id)
        except InvalidInputError as exc:
            raise UsageError(f"invalid input: {exc}") from None
    run_id = record.run_id
    if job.spec is not None and record.workflow != job.spec.name:
        raise UsageError(f"run {run_id} is a run of workflow {record.workflow!r}, not {job.spec.name!r}")
    if job.input is not None and job.input != record.input:
        _note(session, f"run {run_id} exists: it keeps its stored input, --input is ignored")
    if record.status in FINISHED:
        if job.command == "resume":
            raise UsageError(f"run {run_id} is already {record.status}")
        _note(session, f"run {run_id} is already {record.status}; showing its stored result")
    elif record.status == "interrupted" and job.value is not UNSET:
        try:
            await rt.resume(run_id, job.value, node=job.node)
        except InvalidInputError as exc:
            raise UsageError(f"invalid --value: {exc}") from None
        except WorkflowNotFoundError as exc:  # checked before the run changes: it stays interrupted
            raise UsageError(f"{exc}; pass --workflows DIR with the directory of those workflow files") from None
        except ToolNotFoundError as exc:
            raise UsageError(f"{exc}; pass --tools with the file or module that defines them") from None
    elif job.value is not UNSET:
        _note(session, f"run {run_id} is {record.status}, not waiting at an interrupt; --value is ignored")
    if record.status not in FINISHED and run_id in rt.unrecovered and not rt.executing(run_id):
        reason = rt.unrecovered[run_id]
        hint = ("; pass --tools with the file or module that defines them" if isinstance(reason, ToolNotFoundError)
                else "; pass --workflows DIR with the directory of those workflow files"
                if isinstance(reason, WorkflowNotFoundError) else "")
        raise UsageError(f"run {run_id} cannot be continued here: {reason}{hint}")
    return run_id  # an unfinished run was recovered (continued from its checkpoints) when the runtime opened


class _Pump:
    """Feeds the run's events to the view (and to stdout as JSON lines), replay first, then live."""

    def __init__(self, rt: Runtime, run_id: str, view: View, jsonl: bool, outcome: _Outcome) -> None:
        self.rt, self.run_id, self.view, self.jsonl, self.outcome = rt, run_id, view, jsonl, outcome
        self.last = 0
        self.active = False
        self.ended = anyio.Event()
        self.interrupted = anyio.Event()

    def launch(self, tg: anyio.abc.TaskGroup) -> None:
        self.active, self.ended = True, anyio.Event()
        tg.start_soon(self._run)

    async def _run(self) -> None:
        try:
            async for event in self.rt.events(self.run_id, after=self.last):
                self.last = event.seq
                if self.jsonl:
                    try:
                        sys.stdout.write(event.model_dump_json() + "\n")
                        sys.stdout.flush()
                    except BrokenPipeError:  # `... | head`: stop as SIGPIPE would, the run left resumable
                        _silence_stdout()
                        self.outcome.stop(signal.SIGPIPE)
                        return
                self.view.handle(event)
                if isinstance(event, RunInterrupted):
                    self.interrupted.set()
        finally:
            self.active = False
            self.ended.set()


async def _follow(rt: Runtime, run_id: str, view: View, session: Session, outcome: _Outcome) -> RunRecord:
    """Show the run until it finishes, or waits at an interrupt nobody here can answer."""
    pump = _Pump(rt, run_id, view, session.events_jsonl, outcome)
    view.start()
    async with anyio.create_task_group() as tg:
        pump.launch(tg)
        tg.start_soon(view.tick)
        while True:
            record = await rt.wait(run_id)
            if record.status != "interrupted" or not session.interactive:
                break
            with anyio.move_on_after(1):  # let the view show the interrupt before the prompt
                await pump.interrupted.wait()
            pump.interrupted = anyio.Event()
            outcome.at_prompt = True
            value = await ask(record, view)
            outcome.at_prompt = False
            if value is UNSET:
                break
            try:
                await rt.resume(run_id, value, node=(record.interrupt or {}).get("node"))
            except InvalidInputError as exc:
                sys.stderr.write(f"invalid value: {exc}\n")
                continue
            except AgentflowError as exc:  # answered meanwhile elsewhere, say: ask again about what waits now
                sys.stderr.write(f"error: {exc}\n")
                continue
            if not pump.active:  # the run was not executing here, so its event stream had ended
                pump.launch(tg)
        if record.status in FINISHED and pump.active:
            with anyio.move_on_after(10):
                await pump.ended.wait()
        tg.cancel_scope.cancel()
    return record


def _report(record: RunRecord, session: Session) -> int:
    if record.status == "completed":
        if not session.events_jsonl:
            try:
                sys.stdout.write(jsondata.dumps(record.output, indent=2, ensure_ascii=False, default=str) + "\n")
                sys.stdout.flush()
            except BrokenPipeError:  # the reader left; the run completed all the same
                _silence_stdout()
        return EXIT_OK
    if record.status == "interrupted":
        info = record.interrupt or {}
        prompt = f": {info['prompt']}" if info.get("prompt") else ""
        lines = [f"run {record.run_id} waits at {info.get('node')!r}{prompt}"]
        if info.get("schema"):
            lines.append(f"value schema: {json.dumps(info['schema'], ensure_ascii=False)}")
        if session.store is None:
            lines.append("it was kept in memory only (--no-store), so it cannot be resumed; run without --no-store")
        else:
            lines += ["resume it with:", f"  {_resume_command(session, record.run_id)}"]
        sys.stderr.write("\n".join(lines) + "\n")
        return EXIT_INTERRUPTED
    if record.status in ("failed", "cancelled"):
        detail = record.error or "no reason given"
        sys.stderr.write(f"error: run {record.run_id} {record.status}: {detail}\n")
        return EXIT_FAILED
    sys.stderr.write(f"error: run {record.run_id} could not be continued (status {record.status}); "
                     "see the messages above\n")
    return EXIT_FAILED


def _silence_stdout() -> None:
    """stdout's reader is gone: point it at /dev/null, so the interpreter's last flush does not fail too."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _note(session: Session, message: str) -> None:
    if session.view != "quiet":
        sys.stderr.write(message + "\n")


def _usage(exc: Exception) -> int:
    sys.stderr.write(f"error: {exc}\n")
    return EXIT_USAGE


__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "UsageError", "add_commands",
           "cmd_resume", "cmd_run", "default_store_path", "format_issue", "load_tools",
           "load_workflows", "module_tools", "needs_llm"]
