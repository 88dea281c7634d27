"""``agentflow validate``: every problem of every workflow file, with line and column.

::

    agentflow validate workflows/*.yaml                  # exit 0: no problems; 1: problems; 2: a file unreadable
    agentflow validate flow.yaml --tools mytools.py      # tools checked against those `run` would load
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agentflow.cli_run import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, format_issue
from agentflow.discovery import DiscoveryError, load_tools
from agentflow.dsl.errors import ValidationIssue, WorkflowValidationError
from agentflow.dsl.yaml_loader import load_workflow


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``validate`` to the ``agentflow`` parser."""
    validate = sub.add_parser("validate", help="check workflow files; print every problem with line:column")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument("--tools", action="append", default=[], metavar="PY_FILE_OR_MODULE",
                          help="tools module (repeatable) whose tools the workflows may use, as for `run`; a tools.py "
                          "beside each workflow file is loaded too")
    validate.set_defaults(run=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    checked: list[tuple[str, list[ValidationIssue]]] = []
    unreadable: list[str] = []
    out = sys.stdout
    for name in args.files:  # every file, each with every problem: a missing one does not stop the others
        try:
            issues = _issues(Path(name), args.tools)
        except (UsageError, DiscoveryError) as exc:
            sys.stderr.write(f"error: {exc}\n")
            unreadable.append(name)
            continue
        checked.append((name, issues))
        out.write("".join(format_issue(name, i) + "\n" for i in issues) if issues else f"{name}: ok\n")
    problems = sum(len(issues) for _, issues in checked)
    bad = sum(1 for _, issues in checked if issues)
    if problems:
        out.write(f"{problems} problem(s) in {bad} of {len(checked)} file(s)\n")
    elif not unreadable:
        out.write(f"{len(checked)} file(s) ok\n")
    if unreadable:
        out.write(f"{len(unreadable)} of {len(args.files)} file(s) could not be read\n")
        return EXIT_USAGE
    return EXIT_FAILED if problems else EXIT_OK


def _issues(path: Path, tool_modules: list[str]) -> list[ValidationIssue]:
    """The file's problems, its tools (and their arguments) checked against what `run` would load."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    beside = path.parent / "tools.py"
    tools, _ = load_tools(tool_modules, beside if beside.is_file() else None)
    try:
        load_workflow(path, tools=tools)
    except WorkflowValidationError as exc:
        return exc.issues
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    return []


__all__ = ["add_command", "cmd_validate"]
