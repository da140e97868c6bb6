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

from runner.machine.templated import TemplateFailure, has_template, is_template, template_strings

__all__ = [
    "MAX_OUTPUT",
    "TemplateFailure",
    "check_syntax",
    "environment",
    "evaluate_condition",
    "file_environment",
    "has_template",
    "is_template",
    "render_bounded",
    "render_string",
    "render_value",
    "template_strings",
]

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.DOTALL)


#: The longest text (characters) or collection one template may make: a rendered
#: value, a file, or any string, list or repetition built on the way.
MAX_OUTPUT = 16 * 1024 * 1024
#: The largest power a template may compute (``10 ** 10 ** 10`` would never end).
_MAX_POWER_BITS = 4096
#: String methods whose first argument is a width the result grows to.
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


class BoundedSandbox(jinja2.sandbox.SandboxedEnvironment):
    """The sandbox, and no template that makes a value too large to hold: repetition
    (``'a' * 10**10``), huge powers, padding to a huge width, ``%`` formats and the
    rendered output are all capped at :data:`MAX_OUTPUT` (a SecurityError says so)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = _bounded_filters(self.filters)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if sized and len(seq) * times > MAX_OUTPUT:
                    raise jinja2.exceptions.SecurityError(
                        f"a repetition would make {len(seq) * times:,} items; templates "
                        f"are limited to {MAX_OUTPUT:,}"
                    )
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1 and right * abs(left).bit_length() > _MAX_POWER_BITS:
                raise jinja2.exceptions.SecurityError(
                    f"{left} ** {right} is too large a number for a template"
                )
        elif operator == "%" and isinstance(left, str):
            _check_widths(left)
            result = super().call_binop(context, operator, left, right)
            _check_size(result)
            return result
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        name = getattr(method, "__name__", "")
        owner = getattr(method, "__self__", None)
        if name in ("format", "format_map") and isinstance(owner, str):
            _check_widths(owner)
        if name in _WIDTH_METHODS and isinstance(owner, str):
            width = args[0] if args else next(iter(kwargs.values()), 0)
            if isinstance(width, int) and width > MAX_OUTPUT:
                raise jinja2.exceptions.SecurityError(
                    f"{name}({width}) would make a string longer than templates may"
                )
        result = super().call(__context, __obj, *args, **kwargs)
        _check_size(result)
        return result


_NUMBER = re.compile(r"\d+")


def _check_widths(fmt: str) -> None:
    """A format (``%5s``, ``{:>5}``) whose width or precision would make a huge string."""
    if any(len(n) > 8 and int(n) > MAX_OUTPUT for n in _NUMBER.findall(fmt)):
        raise jinja2.exceptions.SecurityError(
            "a format width or precision larger than templates may make"
        )


def _bounded_filters(filters: dict[str, Any]) -> dict[str, Any]:
    """The built-in filters, with those that pad to a width or format checked first."""
    center, indent, format_ = filters["center"], filters["indent"], filters["format"]

    def checked_center(value: Any, width: int = 80) -> Any:
        if isinstance(width, int) and width > MAX_OUTPUT:
            raise jinja2.exceptions.SecurityError("center() to a width larger than templates may")
        return center(value, width)

    def checked_indent(value: Any, width: Any = 4, *args: Any, **kwargs: Any) -> Any:
        if isinstance(width, int) and width > MAX_OUTPUT // 64:
            raise jinja2.exceptions.SecurityError("indent() wider than templates may")
        return indent(value, width, *args, **kwargs)

    def checked_format(value: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            _check_widths(value)
        return format_(value, *args, **kwargs)

    return {**filters, "center": checked_center, "indent": checked_indent, "format": checked_format}


def _check_size(value: Any) -> None:
    if isinstance(value, str | list | tuple | dict) and len(value) > MAX_OUTPUT:
        raise jinja2.exceptions.SecurityError(
            f"a value of {len(value):,} items; templates are limited to {MAX_OUTPUT:,}"
        )


def render_bounded(template: jinja2.Template, context: Mapping[str, Any]) -> str:
    """``template`` rendered, stopped as soon as its text passes :data:`MAX_OUTPUT`."""
    parts: list[str] = []
    size = 0
    for part in template.generate(**context):
        size += len(part)
        if size > MAX_OUTPUT:
            raise jinja2.exceptions.SecurityError(
                f"the rendered text passes {MAX_OUTPUT:,} characters, the most a template may make"
            )
        parts.append(part)
    return "".join(parts)


@lru_cache(maxsize=1)
def environment() -> jinja2.sandbox.SandboxedEnvironment:
    return BoundedSandbox(
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
    return BoundedSandbox(
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
    """None when ``source`` compiles, else what is wrong with it.

    Most templates are plain: names, attributes, calls, operators, known filters and
    tests, `if`. Parsing proves those compile (Jinja2's code generation can only fail
    on other nodes: an unknown filter or test, blocks, loops, macros, imports), so a
    plain template is only parsed, several times faster than compiled; any other, and
    any error, is compiled, so the verdict and the message are the compiler's.
    """
    return _verdict(_checked_expression if expression else _checked, source, expression)


def check_by_compiling(source: str, *, expression: bool = False) -> str | None:
    """:func:`check_syntax`, by compiling ``source`` whatever it holds (tests compare
    the two)."""
    return _verdict(_compiled_expression if expression else _compiled, source, expression)


def _verdict(check: Callable[[str], object], source: str, expression: bool) -> str | None:
    try:
        check(_strip_braces(source) if expression else source)
    except jinja2.TemplateError as exc:
        return _describe(exc)
    return None


@lru_cache(maxsize=4096)
def _checked(source: str) -> None:
    try:
        tree = environment().parse(source)
    except jinja2.TemplateError:
        tree = None
    if tree is None or not _plain(tree):
        _compiled(source)  # raises the compiler's error, if any


@lru_cache(maxsize=4096)
def _checked_expression(source: str) -> None:
    from jinja2.parser import Parser

    try:
        parser = Parser(environment(), source, state="variable")
        tree = parser.parse_expression()
        plain = parser.stream.eos and _plain(tree)
    except jinja2.TemplateError:
        plain = False
    if not plain:
        _compiled_expression(source)  # raises the compiler's error, if any


@lru_cache(maxsize=1)
def _plain_nodes() -> frozenset[type]:
    """The nodes whose code generation cannot fail (filters and tests: when known)."""
    n = jinja2.nodes
    return frozenset(
        {
            n.Template, n.Output, n.TemplateData, n.Name, n.Const, n.Getattr, n.Getitem,
            n.Slice, n.Call, n.Keyword, n.Compare, n.Operand, n.And, n.Or, n.Not, n.Neg,
            n.Pos, n.Add, n.Sub, n.Mul, n.Div, n.FloorDiv, n.Mod, n.Pow, n.Concat,
            n.CondExpr, n.If, n.List, n.Tuple, n.Dict, n.Pair, n.Filter, n.Test,
        }
    )  # fmt: skip


def _plain(tree: jinja2.nodes.Node) -> bool:
    plain = _plain_nodes()
    env = environment()
    for node in (tree, *tree.find_all(jinja2.nodes.Node)):
        kind = type(node)
        if kind not in plain:
            return False
        if kind is jinja2.nodes.Filter and node.name not in env.filters:  # type: ignore[attr-defined]
            return False
        if kind is jinja2.nodes.Test and node.name not in env.tests:  # type: ignore[attr-defined]
            return False
        if kind is jinja2.nodes.Name and node.ctx != "load":  # type: ignore[attr-defined]
            return False
    return True


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
        return render_bounded(_compiled(source), context)
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
