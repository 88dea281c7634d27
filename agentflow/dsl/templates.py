"""Templates and expressions in a sandboxed Jinja2 environment with strict undefined.

* a **template** is text with ``{{ ... }}`` / ``{% ... %}``; rendered to a string — except a template
  that is exactly one ``{{ expression }}``, which keeps the expression's native value;
* an **expression** is a bare Jinja2 expression (``state.n < 3``), evaluated to a Python value.

The sandbox refuses attribute access to internals (``__class__`` and friends); undefined names and
attributes raise instead of rendering as empty strings. On a mapping, ``a.b`` reads the key ``b`` when there
is one (so ``output.items`` is data, never ``dict.items``), else the attribute. Every error is a :class:`TemplateError`
naming the node and the field.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.meta
from jinja2 import nodes as jnodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment

from agentflow.dsl.errors import TemplateError

_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.DOTALL)


def _tojson(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, but a folded constant that overflowed (``1e308 * 10``) compiles to
    ``float('inf')``: Jinja writes ``str(value)``, and ``inf``/``nan`` are not Python names."""

    def visit_Const(self, node: jnodes.Const, frame: Frame) -> None:
        value = node.as_const(frame.eval_ctx)
        if isinstance(value, float) and not math.isfinite(value):
            self.write(f"float({str(value)!r})")
        else:
            super().visit_Const(node, frame)


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, where ``a.b`` on a dict reads the key ``b`` before any attribute: ``output.items`` is
    the value under ``"items"``, not ``dict.items`` (as :func:`_dotted` reads it too)."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    code_generator_class = _CodeGenerator


def _make_env() -> ImmutableSandboxedEnvironment:
    env = _Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.filters["tojson"] = _tojson
    env.globals.update(len=len, min=min, max=max, sorted=sorted, enumerate=enumerate, zip=zip, range=range)
    return env


ENV = _make_env()


def single_expression(template: str) -> str | None:
    """The expression inside a template that is exactly ``{{ expr }}``, else None."""
    match = _SINGLE_EXPR.match(template)
    return match.group("expr").strip() if match else None


@lru_cache(maxsize=4096)
def _compile_template(source: str) -> jinja2.Template:
    return ENV.from_string(source)


@lru_cache(maxsize=4096)
def _compile_expression(source: str) -> Any:
    return ENV.compile_expression(source, undefined_to_none=False)


def _fail(exc: Exception, what: str, source: str, node: str | None, field: str | None) -> TemplateError:
    detail = getattr(exc, "message", None) or str(exc)
    return TemplateError(f"{what} {source!r} failed: {type(exc).__name__}: {detail}", node=node, field=field)


_DOTTED = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*)\s*$")
_MISSING = object()


def _dotted(path: str, namespace: dict[str, Any]) -> Any:
    """``a.b.c`` through dicts only (what templates read most), else ``_MISSING`` to take Jinja's path.
    Names never start with ``_`` here, so the sandbox's rule about private attributes holds."""
    value: Any = namespace
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


@lru_cache(maxsize=4096)
def _dotted_path(expression: str) -> str | None:
    simple = _DOTTED.match(expression)
    return simple.group(1) if simple else None


@lru_cache(maxsize=4096)
def _single(template: str) -> str | None:
    return single_expression(template)


def evaluate(expression: str, namespace: dict[str, Any], *, node: str | None = None,
             field: str | None = None) -> Any:
    """Evaluate a bare expression against ``namespace``."""
    path = _dotted_path(expression)
    if path is not None:
        value = _dotted(path, namespace)
        if value is not _MISSING:
            return value
    try:
        value = _compile_expression(expression)(**namespace)
    except Exception as exc:
        raise _fail(exc, "expression", expression, node, field) from exc
    if isinstance(value, jinja2.Undefined):  # e.g. a missing dict key under StrictUndefined
        raise TemplateError(f"expression {expression!r} is undefined", node=node, field=field)
    return value


def render(template: str, namespace: dict[str, Any], *, node: str | None = None, field: str | None = None) -> Any:
    """Render a template; ``"{{ expr }}"`` alone returns the expression's native value."""
    expression = _single(template)
    if expression is not None:
        return evaluate(expression, namespace, node=node, field=field)
    if "{" not in template:
        return template
    try:
        return _compile_template(template).render(**namespace)
    except Exception as exc:
        raise _fail(exc, "template", template, node, field) from exc


def render_value(value: Any, namespace: dict[str, Any], *, node: str | None = None, field: str | None = None) -> Any:
    """Render every string inside a nested structure of dicts and lists."""
    if isinstance(value, str):
        return render(value, namespace, node=node, field=field)
    if isinstance(value, dict):
        return {k: render_value(v, namespace, node=node, field=f"{field}.{k}" if field else k)
                for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, namespace, node=node, field=field) for v in value]
    return value


def references(source: str, *, expression: bool = False) -> list[tuple[str, str | None]]:
    """The free variables a template (or expression) reads, each as ``(name, first attribute or None)``.

    ``"{{ state.doc }} {{ classify.category }} {% for x in items %}{{ x }}{% endfor %}"`` gives
    ``[("state", "doc"), ("classify", "category"), ("items", None)]``. Raises ``TemplateError`` on a
    syntax error.
    """
    try:
        ast = ENV.parse("{{ (" + source + ") }}" if expression else source)
        free = jinja2.meta.find_undeclared_variables(ast)  # compiles: an unknown filter or test fails here
    except jinja2.TemplateAssertionError as exc:
        raise TemplateError(f"{source!r} does not compile: {exc.message}") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"syntax error in {source!r}: {exc.message} (line {exc.lineno})") from exc
    found: dict[tuple[str, str | None], None] = {}
    attributed: set[str] = set()
    for found_node in ast.find_all((jnodes.Getattr, jnodes.Getitem)):
        getter: jnodes.Getattr | jnodes.Getitem = found_node  # type: ignore[assignment]
        target = getter.node
        if isinstance(target, jnodes.Name) and target.name in free:
            if isinstance(getter, jnodes.Getattr):
                found[(target.name, getter.attr)] = None
                attributed.add(target.name)
            elif isinstance(getter.arg, jnodes.Const) and isinstance(getter.arg.value, str):
                found[(target.name, getter.arg.value)] = None
                attributed.add(target.name)
    for name_node in ast.find_all(jnodes.Name):
        if name_node.name in free and name_node.ctx == "load":
            found.setdefault((name_node.name, None), None)
    # a bare name that is also used with an attribute is reported once per attribute, plus once bare
    return list(found)


__all__ = ["ENV", "evaluate", "references", "render", "render_value", "single_expression"]
