"""Guards for YAML that a parser must never see, or a program never walk.

Two kinds of hostile documents get past a YAML parser's own checks:

* nesting tens of thousands deep (``[[[[...`` or ``- - - - ...``): the C parser recurses
  and crashes the process with a segmentation fault, so :func:`nesting_problem` looks at
  the text *before* it is parsed;
* aliases: one that contains itself makes a cyclic value, and aliases of aliases (the
  "billion laughs") make a small file stand for billions of values. The parser shares
  the aliased objects, so both are cheap to build and only explode when something walks
  them; :func:`expansion_problem` walks the parsed value once, each shared object once.

A machine.yaml or config file is a few hundred values nested a handful of levels deep;
the limits are far beyond that.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_VALUES", "expansion_problem", "nesting_problem"]

MAX_DEPTH = 1000
"""Deepest flow (``[``, ``{``) or compact (``- - -``) nesting accepted."""

MAX_VALUES = 1_000_000
"""Most values a document may stand for once its aliases are expanded."""

# ``- - - x``: each indicator opens a block collection; spelled out three times so the
# search fails fast where a single indicator stands
_INDICATOR = r"[-?:][ \t]+"
_COMPACT = re.compile(_INDICATOR * 3 + f"(?:{_INDICATOR}){{{MAX_DEPTH - 3},}}")
_BRACKET = re.compile(r"[\[\]{}]")
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def nesting_problem(text: str) -> tuple[int, str] | None:
    """``(line, message)`` when ``text`` nests deeper than :data:`MAX_DEPTH`, else None.

    Brackets inside quoted strings are counted too; a document would need a thousand
    unclosed ones in its strings to be refused wrongly.
    """
    if text.count("[") + text.count("{") > MAX_DEPTH and _flow_depth(_NOT_BRACKET.sub("", text)):
        depth = 0  # the slow scan, for the line number
        for match in _BRACKET.finditer(text):
            if match.group() in "[{":
                depth += 1
                if depth > MAX_DEPTH:
                    return _line(text, match.start()), _deep()
            elif depth:
                depth -= 1
    found = _COMPACT.search(text)
    if found:
        return _line(text, found.start()), _deep()
    return None


def _flow_depth(brackets: str) -> bool:
    """Whether ``brackets`` (only bracket characters) nests deeper than MAX_DEPTH."""
    depth = 0
    for char in brackets:
        if char == "[" or char == "{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif depth:
            depth -= 1
    return False


def expansion_problem(doc: Any) -> str | None:
    """What is wrong with ``doc``'s aliases (a cycle, or too many values), else None."""
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()
    # an explicit stack: a deep (but accepted) document must not hit Python's recursion limit
    stack: list[tuple[Any, bool]] = [(doc, False)]
    while stack:
        node, children_done = stack.pop()
        if not isinstance(node, dict | list):
            continue
        key = id(node)
        if children_done:
            open_ids.discard(key)
            total = 1 + sum(sizes.get(id(c), 1) for c in _children(node))
            if total > MAX_VALUES:
                return (
                    f"its aliases expand to more than {MAX_VALUES:,} values; "
                    "write the values out or use fewer aliases of aliases"
                )
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in open_ids:
            return "an alias refers to a value that contains it (a cycle); remove the alias"
        open_ids.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))
    return None


def _children(node: dict[Any, Any] | list[Any]) -> list[Any]:
    if isinstance(node, dict):
        return [*node.keys(), *node.values()]
    return node


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _deep() -> str:
    return f"nested more than {MAX_DEPTH} levels deep; no machine or config file needs that"
