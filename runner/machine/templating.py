"""Sandboxed Jinja2 rendering for `with:`, `when:`, recovery texts and template files.

One environment for everything: a :class:`~jinja2.sandbox.SandboxedEnvironment` with
:class:`~jinja2.StrictUndefined`, so attribute tricks are refused and an undefined name
is an error that names the variable. Templates are compiled once per process.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.DOTALL)


class TemplateFailure(Exception):
    """A template could not be parsed or rendered; the message says why."""


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value or "{#" in value


@lru_cache(maxsize=1)
def environment() -> jinja2.sandbox.SandboxedEnvironment:
    return jinja2.sandbox.SandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )


class _ConfinedLoader(jinja2.FileSystemLoader):
    """A FileSystemLoader that refuses a template whose real path (links followed) is
    outside ``roots``: a link in the template folder must not read files elsewhere."""

    def __init__(self, searchpath: str, roots: tuple[Path, ...]) -> None:
        super().__init__(searchpath)
        self._roots = tuple(root.resolve() for root in roots)

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        real = Path(filename).resolve()
        if not any(real == root or root in real.parents for root in self._roots):
            raise jinja2.exceptions.SecurityError(
                f"template {template!r} links to {real}, outside the machine folder and "
                "the working directory"
            )
        return source, filename, uptodate


def file_environment(
    searchpath: str, roots: tuple[Path, ...] = ()
) -> jinja2.sandbox.SandboxedEnvironment:
    """A sandboxed environment whose `include`/`import` only see ``searchpath``, and of
    it only files whose real path is under one of ``roots`` (default: ``searchpath``)."""
    return jinja2.sandbox.SandboxedEnvironment(
        loader=_ConfinedLoader(searchpath, roots or (Path(searchpath),)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )


def _describe(exc: Exception) -> str:
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"template syntax error: {exc.message} (line {exc.lineno})"
    if isinstance(exc, jinja2.exceptions.SecurityError):
        return f"refused by the template sandbox: {exc}"
    if isinstance(exc, jinja2.UndefinedError):
        return f"undefined variable: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


@lru_cache(maxsize=4096)
def _compiled(source: str) -> jinja2.Template:
    return environment().from_string(source)


@lru_cache(maxsize=4096)
def _compiled_expression(source: str) -> Any:
    return environment().compile_expression(source, undefined_to_none=False)


def check_syntax(source: str, *, expression: bool = False) -> str | None:
    """None when ``source`` parses, else what is wrong with it."""
    try:
        if expression:
            _compiled_expression(_strip_braces(source))
        else:
            _compiled(source)
    except jinja2.TemplateError as exc:
        return _describe(exc)
    return None


def _strip_braces(expr: str) -> str:
    match = _SINGLE_EXPRESSION.match(expr)
    return match.group("expr") if match else expr


def render_string(source: str, context: Mapping[str, Any]) -> Any:
    """Render one string. A string that is exactly one ``{{ expr }}`` keeps the
    expression's native type (so ``"{{ inputs.port }}"`` stays an integer)."""
    if not is_template(source):
        return source
    try:
        match = _SINGLE_EXPRESSION.match(source)
        if match:
            value = _compiled_expression(match.group("expr"))(**context)
            if isinstance(value, jinja2.Undefined):
                str(value)  # raises UndefinedError naming the variable
            return value
        return _compiled(source).render(**context)
    except jinja2.TemplateError as exc:
        raise TemplateFailure(_describe(exc)) from exc
    except Exception as exc:  # errors raised inside filters or tests
        raise TemplateFailure(_describe(exc)) from exc


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside ``value`` (dicts and lists walked recursively)."""
    if isinstance(value, str):
        return render_string(value, context)
    if isinstance(value, Mapping):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(v, context) for v in value]
    return value


def evaluate_condition(when: str | bool | None, context: Mapping[str, Any]) -> bool:
    """Truth of a `when:` (a bare expression, or one wrapped in ``{{ }}``)."""
    if when is None:
        return True
    if isinstance(when, bool):
        return when
    try:
        value = _compiled_expression(_strip_braces(when))(**context)
        if isinstance(value, jinja2.Undefined):
            str(value)
    except jinja2.TemplateError as exc:
        raise TemplateFailure(_describe(exc)) from exc
    except Exception as exc:
        raise TemplateFailure(_describe(exc)) from exc
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "no", "0", "none")
    return bool(value)


def template_strings(value: Any) -> list[str]:
    """Every templated string inside ``value``."""
    if isinstance(value, str):
        return [value] if is_template(value) else []
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in template_strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in template_strings(v)]
    return []


def has_template(value: Any) -> bool:
    return bool(template_strings(value))
