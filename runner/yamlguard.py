"""Loading YAML that may be hostile: machine.yaml, config files, `--set` values.

A YAML parser's own checks let through documents that crash, hang or exhaust a
program that loads them:

* nesting tens of thousands deep (``[[[[...``, ``- - - - ...``, or lines indented ever
  deeper): ruamel's C parser recurses and the process dies of a segmentation fault;
* nesting a few hundred deep: Python code that walks the value (the constructor for
  complex keys, schema checks) raises RecursionError;
* aliases: one that contains itself makes a cyclic value, and aliases of aliases (the
  "billion laughs"), or merge keys (``<<: [*a, *a]``) of merged mappings, make a small
  file stand for billions of values, built or copied while the document is loaded.

:func:`load` guards against all three. Before parsing, a cheap bound of the nesting
depth is taken from the text: each level of block nesting takes at least one character
of a line's leading run of spaces and indicators, each level of flow nesting one
bracket. A bound above :data:`MAX_TEXT_DEPTH` is refused without parsing. Otherwise,
when the document may be deep (a bound above :data:`MAX_DEPTH`) or has anchors, the
composed node graph is measured (height, size with every alias expanded, cycles), each
shared node once, before any value is built from it. A machine.yaml or a config file
is a few hundred values nested a handful of levels deep; the limits are far beyond
that.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_VALUES", "YamlShapeError", "load"]

MAX_DEPTH = 100
"""Deepest nesting of collections accepted."""

MAX_TEXT_DEPTH = 2000
"""A document whose text allows more nesting than this is refused unparsed: the C
parser crashes somewhere above 20,000."""

MAX_VALUES = 1_000_000
"""Most values a document may stand for once its aliases are expanded."""

_LEADING = re.compile(r"^[ \t?:-]+", re.MULTILINE)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlShapeError(ValueError):
    """The document is too deep, too big once expanded, or cyclic."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def load(text: str, resolver: type | None = None) -> Any:
    """The value of the YAML document ``text`` (ruamel, safe, C parser).

    Raises :class:`YamlShapeError` for the documents above, and ruamel's ``YAMLError``
    for invalid YAML.
    """
    from ruamel.yaml import YAML

    bound, line = _text_depth(text)
    if bound > MAX_TEXT_DEPTH:
        raise YamlShapeError(_too_deep(), line)
    yaml = YAML(typ="safe")
    if resolver is not None:
        yaml.Resolver = resolver
    if bound <= MAX_DEPTH and "&" not in text:
        return _guarded(yaml.load, text)
    constructor, parser = yaml.get_constructor_parser(text)
    try:
        node = constructor.composer.get_single_node()
        if node is None:
            return None
        _check_nodes(node)
        return _guarded(constructor.construct_document, node)
    finally:
        parser.dispose()


def _guarded(build: Any, arg: Any) -> Any:
    try:
        return build(arg)
    except RecursionError:  # a last line of defence: the checks should have refused it
        raise YamlShapeError(_too_deep()) from None


def _text_depth(text: str) -> tuple[int, int | None]:
    """An upper bound of the nesting depth of ``text``, and a line that reaches it."""
    block, block_at = 0, 0
    for match in _LEADING.finditer(text):
        width = match.end() - match.start()
        if width > block:
            block, block_at = width, match.start()
    flow = 0
    if "[" in text or "{" in text:
        depth = 0
        for char in _NOT_BRACKET.sub("", text):
            if char == "[" or char == "{":
                depth += 1
                flow = max(flow, depth)
            elif depth:
                depth -= 1
    if block + flow <= MAX_DEPTH:
        return block + flow, None
    return block + flow, _line(text, block_at if block >= flow else _deepest_bracket(text))


def _deepest_bracket(text: str) -> int:
    """Offset of the first bracket at the deepest flow nesting of ``text``."""
    depth = deepest = at = 0
    for match in re.finditer(r"[\[\]{}]", text):
        if match.group() in "[{":
            depth += 1
            if depth > deepest:
                deepest, at = depth, match.start()
        elif depth:
            depth -= 1
    return at


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _check_nodes(root: Any) -> None:
    """Height, expanded size and cycles of the node graph under ``root``; each shared
    node (an alias) is measured once and counted wherever it is used."""
    from ruamel.yaml.nodes import MappingNode, SequenceNode

    measured: dict[int, tuple[int, int]] = {}  # id -> (height, expanded size)
    open_ids: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if not isinstance(node, MappingNode | SequenceNode):
            continue
        key = id(node)
        children = _children(node)
        if children_done:
            open_ids.discard(key)
            height, size = 1, 1
            for child in children:
                h, s = measured.get(id(child), (0, 1))
                height, size = max(height, h + 1), size + s
            if height > MAX_DEPTH:
                raise YamlShapeError(_too_deep(), _line_of(node))
            if size > MAX_VALUES:
                raise YamlShapeError(
                    f"its aliases expand to more than {MAX_VALUES:,} values; write the "
                    "values out, or use fewer aliases (and merge keys) of aliases",
                    _line_of(node),
                )
            measured[key] = (height, size)
            continue
        if key in measured:
            continue
        if key in open_ids:
            raise YamlShapeError(
                "an alias refers to a value that contains it (a cycle); remove the alias",
                _line_of(node),
            )
        open_ids.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children)


def _children(node: Any) -> list[Any]:
    from ruamel.yaml.nodes import MappingNode

    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value)


def _line_of(node: Any) -> int | None:
    mark = getattr(node, "start_mark", None)
    return mark.line + 1 if mark is not None else None


def _too_deep() -> str:
    return f"nested more than {MAX_DEPTH} levels deep; no machine or config file needs that"
