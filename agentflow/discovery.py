"""Finding what a workflow needs on disk: Python tools modules and sibling workflow files.

Used by the CLI (``agentflow run --tools ... --workflows ...``) and by anything else that serves
workflows from a directory.

* A tools module is a Python file or an importable module name. It contributes its ``TOOLS`` list if
  it defines one, else every public function (or ``Tool``) defined in the module itself; functions it
  imports are not tools.
* A workflows directory contributes every ``*.yaml`` / ``*.yml`` file that loads; files that fail to
  load are skipped with a warning, and so are files that share a workflow name (naming each file) and
  workflows whose calls of other workflows come back around (``workflow_cycle``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from agentflow.dsl.errors import WorkflowValidationError
from agentflow.dsl.ir import WorkflowSpec
from agentflow.dsl.validate import workflow_cycles
from agentflow.dsl.yaml_loader import load_workflow
from agentflow.errors import AgentflowError
from agentflow.tool import Tool, ToolError, ToolRegistry, as_tool

logger = logging.getLogger(__name__)

WORKFLOW_SUFFIXES = ("*.yaml", "*.yml")


class DiscoveryError(AgentflowError):
    """A tools module could not be found or loaded, or its ``TOOLS`` is malformed."""

    code = "discovery_error"


def load_tools(entries: Sequence[str], auto: Path | None) -> tuple[ToolRegistry, list[str]]:
    """The tools of every module in ``entries`` (files or module names), then of ``auto``; also how to name
    each module again (absolute file paths, module names as given)."""
    registry = ToolRegistry()
    sources: list[str] = []
    targets = [*entries, *([str(auto)] if auto is not None else [])]
    for entry in targets:
        is_file = entry.endswith(".py") or os.sep in entry or Path(entry).is_file()
        source = str(Path(entry).resolve()) if is_file else entry
        if source in sources:
            continue
        sources.append(source)
        module = _import_file(Path(entry)) if is_file else _import_module(entry)
        for tool in module_tools(module):
            if tool.name in registry:
                logger.warning("tool %r from %s replaces one loaded before", tool.name, entry)
            registry.add(tool)
    return registry, sources


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise DiscoveryError(f"--tools {name}: no such file or module ({exc})") from None
    except Exception as exc:
        raise _load_failure(name, exc) from None


def _import_file(path: Path) -> ModuleType:
    path = path.resolve()
    if not path.is_file():
        raise DiscoveryError(f"--tools {path}: no such file")
    name = "agentflow_user_tools_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DiscoveryError(f"--tools {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))  # its sibling modules import; appended, so it shadows nothing
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise _load_failure(str(path), exc) from None
    return module


def _load_failure(source: str, exc: Exception) -> DiscoveryError:
    logger.info("loading tools from %s failed", source, exc_info=exc)
    return DiscoveryError(f"cannot load tools from {source}: {type(exc).__name__}: {exc} (run `agentflow -v ...` "
                      "for the traceback)")


def module_tools(module: ModuleType) -> list[Tool]:
    """``module.TOOLS`` if defined, else every public function (or ``Tool``) defined in the module itself."""
    declared = getattr(module, "TOOLS", None)
    try:
        if declared is not None:
            if not isinstance(declared, (list, tuple)):
                where = module.__file__ or module.__name__
                raise DiscoveryError(f"{where}: TOOLS must be a list of functions or tools")
            return [as_tool(obj) for obj in declared]
        own = [obj for name, obj in vars(module).items() if not name.startswith("_") and _defined_in(obj, module)]
        return [as_tool(obj) for obj in own]
    except ToolError as exc:
        raise DiscoveryError(f"{module.__file__ or module.__name__}: {exc}") from None


def _defined_in(obj: Any, module: ModuleType) -> bool:
    fn = obj.fn if isinstance(obj, Tool) else obj
    return (isinstance(obj, Tool) or inspect.isfunction(obj)) and getattr(fn, "__module__", None) == module.__name__


def load_workflows(dirs: Sequence[Path], skip: Path | None, *,
                   tools: Collection[str] | None = None) -> tuple[list[WorkflowSpec], list[str]]:
    """Every workflow file in ``dirs`` but ``skip`` (failures logged and skipped), and the directories
    that gave at least one. ``tools``, when given, are the known tools (names, or a ``ToolRegistry`` to check
    arguments too): a workflow using another is skipped, as it would fail when it runs."""
    loaded: dict[Path, WorkflowSpec] = {}
    origin: dict[Path, Path] = {}  # file -> the directory it was found in
    seen: set[Path] = {skip.resolve()} if skip is not None else set()
    for directory in dict.fromkeys(d.resolve() for d in dirs):
        files = sorted({f.resolve() for pattern in WORKFLOW_SUFFIXES for f in directory.glob(pattern)} - seen)
        seen.update(files)
        for file in files:
            try:
                loaded[file] = load_workflow(file, tools=tools)
                origin[file] = directory
            except WorkflowValidationError as exc:
                logger.warning("skipping workflow %s: %d problem(s), first: %s", file, len(exc.issues),
                               exc.issues[0] if exc.issues else "?")
            except (ValueError, OSError) as exc:
                logger.warning("skipping workflow %s: %s", file, exc)
    loaded = without_cycles(without_duplicates(loaded))
    used = [str(d) for d in dict.fromkeys(origin[file] for file in loaded)]
    return list(loaded.values()), used


def without_duplicates(loaded: dict[Path, WorkflowSpec]) -> dict[Path, WorkflowSpec]:
    """``loaded`` less the files that share a workflow name: which one a run would get is anyone's guess."""
    files: dict[str, list[Path]] = {}
    for file, spec in loaded.items():
        files.setdefault(spec.name, []).append(file)
    for name, same in files.items():
        if len(same) > 1:
            logger.warning("skipping workflow files %s: each is named %r; rename all but one",
                           ", ".join(map(str, same)), name)
    return {file: spec for file, spec in loaded.items() if len(files[spec.name]) == 1}


def without_cycles(loaded: dict[Path, WorkflowSpec]) -> dict[Path, WorkflowSpec]:
    """``loaded`` less the workflows whose calls of workflows come back around: a run of one would never end."""
    kept: dict[Path, WorkflowSpec] = {}
    for file, spec in loaded.items():
        issues = workflow_cycles(spec, list(loaded.values()))
        if issues:
            logger.warning("skipping workflow %s: %s: %s (at %s)", file, issues[0].code, issues[0].message,
                           issues[0].pointer)
        else:
            kept[file] = spec
    return kept


__all__ = ["WORKFLOW_SUFFIXES", "DiscoveryError", "load_tools", "load_workflows", "module_tools", "without_cycles",
           "without_duplicates"]
