"""The YAML front end: parse safely, remember where every value is written, validate, report with lines.

Parsing uses PyYAML's safe loader only, composes the node tree, and builds plain JSON-like data from
it: mappings, sequences, strings, numbers, booleans and null (a timestamp stays the string it is
written as; any other tag is refused). Mapping keys are always the strings written in the source, so
``on:`` stays ``"on"`` (YAML 1.1 would read it as ``true``). While building, every JSON pointer gets
the 1-based line and column it came from (for a mapping entry: its key), and duplicate keys, which
PyYAML would silently collapse, are reported as ``duplicate_key``. A JSON file is read the same way.
"""

from __future__ import annotations

import bisect
import logging
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from agentflow.dsl.errors import ValidationIssue, WorkflowValidationError
from agentflow.dsl.ir import WorkflowSpec
from agentflow.dsl.validate import KnownWorkflows, json_pointer, validate_data

logger = logging.getLogger(__name__)

MAX_VALUES = 200_000
"""The most values one document may expand to (anchors and aliases included)."""
SUFFIXES = (".yaml", ".yml", ".json")
_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}


class _Refused(Exception):
    """The document uses something the loader does not accept (a tag, a recursive alias, ...)."""

    def __init__(self, code: str, message: str, mark: yaml.Mark | None) -> None:
        super().__init__(message)
        self.code, self.message, self.mark = code, message, mark


def _position(mark: yaml.Mark | None) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


@dataclass
class _Document:
    """Parsed data plus where each part of it is written."""

    text: str
    data: object = None
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # pointer -> source span of a string
    issues: list[ValidationIssue] = field(default_factory=list)

    def locate(self, pointer: str) -> tuple[int, int]:
        """Line and column of ``pointer``, or of its longest prefix that was written in the source."""
        while pointer not in self.positions and pointer:
            pointer = pointer[:pointer.rfind("/")]
        return self.positions.get(pointer, (1, 1))

    def locate_text(self, pointer: str, pattern: str) -> tuple[int, int] | None:
        """Line and column of the first match of ``pattern`` in the string written at ``pointer``."""
        span = self.spans.get(pointer)
        match = re.compile(pattern).search(self.text, *span) if span else None
        if match is None:
            return None
        starts = self._line_starts()
        line = bisect.bisect_right(starts, match.start())
        return line, match.start() - starts[line - 1] + 1

    def _line_starts(self) -> list[int]:
        return [0, *(m.end() for m in re.finditer("\n", self.text))]


class _Builder:
    """Builds plain data from a composed node tree, recording positions and duplicate keys."""

    def __init__(self, loader: yaml.SafeLoader, doc: _Document) -> None:
        self.loader, self.doc = loader, doc
        self.count = 0
        self.active: set[int] = set()  # nodes on the current path, to refuse recursive aliases

    def build(self, node: Node, path: list[str | int]) -> object:
        self.count += 1
        if self.count > MAX_VALUES:
            raise _Refused("too_large", f"the document expands to more than {MAX_VALUES} values", node.start_mark)
        if id(node) in self.active:
            raise _Refused("yaml_syntax", "recursive alias: a value cannot contain itself", node.start_mark)
        self.active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self.mapping(node, path)
            if isinstance(node, SequenceNode):
                if node.tag != _TAG + "seq":
                    raise _Refused("yaml_syntax", f"unsupported tag {node.tag!r}", node.start_mark)
                return [self.item(child, [*path, i]) for i, child in enumerate(node.value)]
            return self.scalar(node, path)
        finally:
            self.active.discard(id(node))

    def item(self, node: Node, path: list[str | int]) -> object:
        self.doc.positions[json_pointer(path)] = _position(node.start_mark)
        return self.build(node, path)

    def mapping(self, node: MappingNode, path: list[str | int]) -> dict[str, object]:
        if node.tag != _TAG + "map":
            raise _Refused("yaml_syntax", f"unsupported tag {node.tag!r}", node.start_mark)
        result: dict[str, object] = {}
        merged: dict[str, object] = {}
        first: dict[str, yaml.Mark] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":  # `<<: *defaults`: explicit keys win
                for source in (value_node.value if isinstance(value_node, SequenceNode) else [value_node]):
                    built = self.build(source, path)
                    if not isinstance(built, dict):
                        raise _Refused("yaml_syntax", "`<<` merges only mappings", source.start_mark)
                    merged = {**built, **merged}
                continue
            if not isinstance(key_node, ScalarNode):
                raise _Refused("wrong_type", "a mapping key must be a plain scalar, not a mapping or list",
                               key_node.start_mark)
            key = key_node.value
            child = json_pointer([*path, key])
            if key in first:
                line = first[key].line + 1
                self.doc.issues.append(ValidationIssue(
                    code="duplicate_key", pointer=child, line=key_node.start_mark.line + 1,
                    column=key_node.start_mark.column + 1,
                    message=f"duplicate key `{key}` (first at line {line}); only one value per key is kept"))
            first[key] = key_node.start_mark
            self.doc.positions[child] = _position(key_node.start_mark)
            result[key] = self.build(value_node, [*path, key])
        return {**merged, **result} if merged else result

    def scalar(self, node: Node, path: list[str | int]) -> object:
        if node.tag == _TAG + "timestamp":
            return node.value
        if node.tag not in _SCALAR_TAGS:
            raise _Refused("yaml_syntax", f"unsupported tag {node.tag!r}: only plain data (strings, numbers, "
                           "booleans, null, lists and mappings) is accepted", node.start_mark)
        value = self.loader.construct_object(node)
        if isinstance(value, str):
            self.doc.spans[json_pointer(path)] = (node.start_mark.index, node.end_mark.index)
        return value


def _parse(text: str) -> _Document:
    doc = _Document(text)
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        root = loader.get_single_node()
        if root is not None:
            doc.positions[""] = _position(root.start_mark)
            doc.data = _Builder(loader, doc).build(root, [])
    except _Refused as exc:
        doc.issues = [_issue(exc.code, exc.message, _position(exc.mark))]
    except yaml.MarkedYAMLError as exc:
        doc.issues = [_syntax_issue(exc)]
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        doc.issues = [_issue("yaml_syntax", f"unacceptable character {char}: {exc.reason}", (line, column))]
    except yaml.YAMLError as exc:
        doc.issues = [_issue("yaml_syntax", str(exc), (1, 1))]
    except RecursionError:
        doc.issues = [_issue("yaml_syntax", "the document is nested too deeply", (1, 1))]
    finally:
        if loader is not None:
            loader.dispose()
    return doc


def _syntax_issue(exc: yaml.MarkedYAMLError) -> ValidationIssue:
    context, problem = exc.context or "", exc.problem or "invalid YAML"
    mark = exc.problem_mark or exc.context_mark
    if exc.context_mark is not None and ("end of stream" in problem or "<stream end>" in problem):
        mark = exc.context_mark  # an unclosed quote or bracket: point at where it opened
    elif exc.context_mark is not None and context:
        line, column = _position(exc.context_mark)
        context = f"{context} (from line {line}, column {column})"
    return _issue("yaml_syntax", f"{context}: {problem}" if context else problem, _position(mark))


def _issue(code: str, message: str, where: tuple[int, int]) -> ValidationIssue:
    return ValidationIssue(code=code, message=message, line=where[0], column=where[1])


def _load(text: str, source: str | None, tools: Collection[str] | None,
          workflows: KnownWorkflows | None) -> tuple[WorkflowSpec | None, list[ValidationIssue]]:
    doc = _parse(text)
    if doc.issues and doc.issues[0].code != "duplicate_key":  # the text could not be read as data
        spec, issues = None, doc.issues
    else:
        spec, found = validate_data(doc.data, locate=doc.locate, locate_text=doc.locate_text, tools=tools,
                                    workflows=workflows)
        issues = [*doc.issues, *found]
        spec = None if issues else spec
    issues.sort(key=lambda i: (i.line or 0, i.column or 0))
    logger.debug("validated %s: %d issue(s)", source or "<yaml>", len(issues))
    return spec, issues


def validate_yaml(text: str, source: str | None = None, *, tools: Collection[str] | None = None,
                  workflows: KnownWorkflows | None = None) -> list[ValidationIssue]:
    """Every problem in a YAML workflow, each with line and column; an empty list when it is valid.

    Never raises for bad input: syntax errors are issues too (``yaml_syntax``).
    """
    return _load(text, source, tools, workflows)[1]


def load_yaml(text: str, *, source: str | None = None, tools: Collection[str] | None = None,
              workflows: KnownWorkflows | None = None) -> WorkflowSpec:
    """The workflow in ``text``, or :class:`WorkflowValidationError` listing every problem with its line."""
    spec, issues = _load(text, source, tools, workflows)
    if spec is None:
        raise WorkflowValidationError(issues, source=source)
    return spec


def load_workflow(path: str | Path, *, tools: Collection[str] | None = None,
                  workflows: KnownWorkflows | None = None) -> WorkflowSpec:
    """Read and validate a ``.yaml`` / ``.yml`` / ``.json`` workflow file.

    Raises ``FileNotFoundError`` when there is no such file, ``ValueError`` for another suffix, and
    :class:`WorkflowValidationError` (with ``source`` set to the path) when the workflow is invalid.
    """
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(f"{path}: a workflow file must end in .yaml, .yml or .json")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"workflow file not found: {path}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        issue = _issue("yaml_syntax", f"the file is not UTF-8 text ({exc.reason})", (line, 1))
        raise WorkflowValidationError([issue], source=str(path)) from None
    return load_yaml(text, source=str(path), tools=tools, workflows=workflows)


__all__ = ["MAX_VALUES", "load_workflow", "load_yaml", "validate_yaml"]
