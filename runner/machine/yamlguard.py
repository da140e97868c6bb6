"""Loading YAML that may be hostile: machine.yaml, config files, `--set` values.

A YAML parser's own checks let through documents that crash, hang or exhaust a
program that loads them, or values a JSON document cannot hold:

* nesting tens of thousands deep: ruamel's C composer recurses and the process dies
  of a segmentation fault; a few hundred deep: Python code walking the value raises
  RecursionError;
* aliases: one inside the value it names makes a cycle, and aliases of aliases (the
  "billion laughs"), merge keys (``<<: [*a, *a]``) of merged mappings, or aliases of a
  long string make a small file stand for billions of values or gigabytes of text;
* values that are not JSON: dates, sets, binary, keys that are lists or mappings.

:func:`load` guards against all of them. Documents that cannot nest deeper than
:data:`MAX_DEPTH` (a bound from the text: each level of block nesting takes at least
one character of a line's leading run of spaces and indicators, each level of flow
nesting an opening bracket) and have no anchors or tags are loaded at once and their
value checked for JSON types. Others are first read as a stream of parser events (the
C parser keeps its own stack: no recursion, whatever the depth), which measures the
depth, the expanded size of every alias, the tags and the keys, and stops at the first
problem; only then is the document built. Plain scalars that look like dates stay
strings (YAML 1.2 has no timestamps).
"""

from __future__ import annotations

import functools
import re
from typing import Any

__all__ = ["MAX_CHARS", "MAX_DEPTH", "MAX_VALUES", "YamlShapeError", "load", "resolver"]

MAX_DEPTH = 100
"""Deepest nesting of collections accepted."""

MAX_VALUES = 1_000_000
"""Most values a document may stand for once its aliases are expanded."""

MAX_CHARS = 20_000_000
"""Most characters of scalars a document may stand for once its aliases are expanded."""

_LEADING = re.compile(r"^[ \t?:-]+", re.MULTILINE)
_JSON_TAGS = frozenset(
    "tag:yaml.org,2002:" + name
    for name in ("str", "int", "float", "bool", "null", "map", "seq", "merge")
)
_NOT_JSON = {
    "tag:yaml.org,2002:timestamp",
    "tag:yaml.org,2002:value",
}


class YamlShapeError(ValueError):
    """The document is too deep, too big once expanded, cyclic, or not JSON-like."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@functools.cache
def resolver() -> type:
    """ruamel's resolver for YAML 1.2, with the version fixed and no timestamps.

    The stock resolver looks the YAML version up again for every scalar, which under
    the C parser costs a caught AttributeError each time (a fifth of the parse of a
    large file); a ``%YAML 1.1`` directive is not honoured. Plain scalars that look like
    dates stay strings: YAML 1.2's core schema has no timestamps, and JSON none either.
    """
    from ruamel.yaml.resolver import VersionedResolver

    class Yaml12Resolver(VersionedResolver):
        @property
        def processing_version(self) -> tuple[int, int]:
            return (1, 2)

        @property
        def versioned_resolver(self) -> Any:
            table = self.__dict__.get("_json_table")
            if table is None:
                table = {
                    first: [(tag, regexp) for tag, regexp in entries if tag not in _NOT_JSON]
                    for first, entries in super().versioned_resolver.items()
                }
                self.__dict__["_json_table"] = table
            return table

    return Yaml12Resolver


def load(text: str) -> Any:
    """The value of the YAML document ``text`` (ruamel, safe, C parser).

    Raises :class:`YamlShapeError` for the documents above, and ruamel's ``YAMLError``
    for invalid YAML.
    """
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe")
    yaml.Resolver = resolver()
    if "&" not in text and "!" not in text and _text_depth(text) <= MAX_DEPTH:
        value = _build(yaml.load, text)
        _check_json(value)
        return value
    built = _EventLoader(yaml).load(text)
    if built is not _UNBUILT:
        return built
    # checked, but left to ruamel (a duplicate key or several documents, which ruamel
    # reports in its words): ruamel builds it, now that it is known to be safe
    yaml = YAML(typ="safe")
    yaml.Resolver = resolver()
    return _build(yaml.load, text)


_UNBUILT: Any = object()
_UNSEEN: Any = object()
_KEY_NOT_TEXT = "a key is a list or a mapping; keys must be text"
_UNREADABLE = (ValueError, TypeError, KeyError, OverflowError)
"""What building a scalar its tag cannot hold raises (`!!int abc`, 5,000 digits)."""
_MERGE = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"


def _build(load: Any, text: str) -> Any:
    try:
        return load(text)
    except RecursionError:  # a last line of defence: the checks should have refused it
        raise YamlShapeError(_too_deep()) from None
    except _UNREADABLE as exc:
        raise YamlShapeError(f"a value cannot be read: {exc}") from None


def _text_depth(text: str) -> int:
    """An upper bound of the nesting depth of ``text``: the longest leading run of
    spaces and indicators of a line, plus every opening bracket (brackets inside
    strings and comments count too: a bound, never an underestimate)."""
    block = max(map(len, _LEADING.findall(text)), default=0)
    return block + text.count("[") + text.count("{")


class _EventLoader:
    """Builds a document from parser events, checking it as it goes (no recursion, each
    alias measured, never expanded). Returns ``_UNBUILT`` for what it leaves to ruamel
    after checking it all."""

    def __init__(self, yaml: Any) -> None:
        self.yaml = yaml
        self.resolver = yaml.resolver
        self.constructor = yaml.constructor
        # the value of each plain scalar seen: the resolver's regular expressions decide
        # its tag from the text alone, and a machine repeats its words (keys, plugin
        # names, `true`); values of other types are immutable, so one is shared
        self._plain: dict[str, Any] = {}
        # the first characters an implicit tag may start with: a plain scalar beginning
        # with another is text, as the resolver finds after trying no expression
        table = self.resolver.versioned_resolver
        self._tagged_first = (
            None
            if table.get(None) or self.resolver.yaml_path_resolvers
            else frozenset(first for first in table if first is not None)
        )

    def _events(self, text: str) -> Any:
        """A function returning the next parser event of ``text``: the C parser's own
        (a generator around it costs a tenth of the parse), or ruamel's Python parser
        where there is no C one."""
        from ruamel.yaml import main

        parser = getattr(main, "CParser", None)  # None without ruamel.yaml.clib
        if parser is None:  # pragma: no cover - the clib is installed with CPython
            return iter(self.yaml.parse(text)).__next__
        return parser(text).get_event

    def load(self, text: str) -> Any:
        from ruamel.yaml.events import (
            AliasEvent,
            DocumentStartEvent,
            MappingEndEvent,
            MappingStartEvent,
            ScalarEvent,
            SequenceEndEvent,
            SequenceStartEvent,
            StreamEndEvent,
        )

        # The loop of a large machine (about a hundred thousand events), in local
        # variables: the open collection is `obj` (a dict when `is_map`, where `want_key`
        # says whether the next value is a key), the collections around it wait in
        # `stack`. `values` and `chars` count what the document stands for so far,
        # aliases expanded; an anchored collection's own size is what they grew by
        # while it was open. The line of an event is only looked up to report a problem.
        next_event = self._events(text)
        plain = self._plain
        json_tags = _JSON_TAGS
        stack: list[tuple[Any, ...]] = []
        obj: Any = []  # the documents
        is_map = want_key = False
        key: Any = None
        anchor: str | None = None
        start_values = start_chars = 0
        merges: list[dict[Any, Any]] | None = None
        values = chars = documents = 0
        anchors: dict[str, tuple[Any, int, int]] = {}  # -> (value, values, chars)
        open_anchors: set[str] = set()
        building = True
        anchored = "&" in text  # else no event has an anchor: none is asked for
        most_values, most_chars = MAX_VALUES, MAX_CHARS
        while True:
            event = next_event()
            kind = type(event)
            if kind is ScalarEvent:
                text_value = event.value
                tag = event.ctag
                if tag is not None:
                    tag = str(tag)
                    if tag not in json_tags:
                        raise YamlShapeError(_tag_problem(tag), _line(event))
                    value = self._tagged(tag, text_value, event) if building else None
                elif not event.implicit[0]:
                    value = text_value  # quoted, or a block scalar: text
                else:
                    value = plain.get(text_value, _UNSEEN)
                    if value is _UNSEEN:
                        value = self._resolve(text_value, event) if building else None
                    if value is _MergeKey and not want_key:
                        building = False  # `<<` as a value: ruamel says what is wrong
                size = len(text_value)
                if anchored and event.anchor is not None:
                    anchors[event.anchor] = (value, 1, size)
                values += 1
                chars += size
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                if not building:
                    value = None
                elif merges is None:
                    value = obj
                else:
                    value = _merged(obj, merges)
                if anchor is not None:
                    open_anchors.discard(anchor)
                    anchors[anchor] = (value, values - start_values + 1, chars - start_chars)
                values += 1
                obj, is_map, want_key, key, anchor, start_values, start_chars, merges = stack.pop()
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                if event.ctag is not None and str(event.ctag) not in json_tags:
                    raise YamlShapeError(_tag_problem(event.ctag), _line(event))
                if want_key:
                    raise YamlShapeError(_KEY_NOT_TEXT, _line(event))
                if len(stack) >= MAX_DEPTH:
                    raise YamlShapeError(_too_deep(), _line(event))
                stack.append(
                    (obj, is_map, want_key, key, anchor, start_values, start_chars, merges)
                )
                is_map = want_key = kind is MappingStartEvent
                obj = {} if is_map else []
                key = merges = None
                anchor = event.anchor
                if anchor is not None:
                    open_anchors.add(anchor)
                start_values, start_chars = values, chars
                continue
            elif kind is AliasEvent:
                name = event.anchor
                if name in open_anchors:
                    raise YamlShapeError(
                        "an alias refers to a value that contains it (a cycle); remove the alias",
                        _line(event),
                    )
                if name not in anchors:
                    building = False  # an undefined alias: ruamel reports it
                value, alias_values, alias_chars = anchors.get(name, (None, 1, 0))
                if value is _MergeKey and not want_key:
                    building = False
                if want_key and isinstance(value, dict | list):
                    raise YamlShapeError(_KEY_NOT_TEXT, _line(event))
                values += alias_values
                chars += alias_chars
            elif kind is StreamEndEvent:
                break
            else:  # the stream's and the documents' starts and ends
                if kind is DocumentStartEvent:
                    documents += 1
                    if documents > 1:
                        building = False  # ruamel says what is wrong with that
                continue
            if values > most_values or chars > most_chars:
                raise YamlShapeError(
                    f"its aliases expand to more than {MAX_VALUES:,} values or "
                    f"{MAX_CHARS:,} characters; write the values out, or use fewer aliases "
                    "(and merge keys) of aliases",
                    _line(event),
                )
            # the value completed goes into the open collection
            if not is_map:
                obj.append(value)
            elif want_key:
                key = value
                want_key = False
            else:
                want_key = True
                if key is _MergeKey:
                    merged: list[Any] = value if isinstance(value, list) else [value]
                    if not all(isinstance(m, dict) for m in merged):
                        building = False  # ruamel says what is wrong with that
                    elif merges is None:
                        merges = list(merged)
                    else:
                        merges.extend(merged)
                elif key in obj:
                    building = False  # a duplicate key: ruamel reports it
                else:
                    obj[key] = value
        if not building:
            return _UNBUILT
        return obj[0] if obj else None

    def _resolve(self, text: str, event: Any) -> Any:
        """The value of the plain scalar ``text`` (kept for the next one alike)."""
        if self._tagged_first is not None and text[:1] not in self._tagged_first:
            value: Any = text  # ("" is in the table: an empty one is null)
        else:
            from ruamel.yaml.nodes import ScalarNode

            tag = str(self.resolver.resolve(ScalarNode, text, (True, False)))
            value = text if tag == _STR else self._tagged(tag, text, event)
        self._plain[text] = value
        return value

    def _tagged(self, tag: str, text: str, event: Any) -> Any:
        """The value of a scalar of JSON tag ``tag``."""
        if tag == _STR:
            return text
        if tag == _MERGE:
            return _MergeKey
        from ruamel.yaml.nodes import ScalarNode
        from ruamel.yaml.tag import Tag

        node = ScalarNode(Tag(suffix=tag), text)
        try:
            return self.constructor.construct_object(node, deep=True)
        except _UNREADABLE as exc:
            raise YamlShapeError(
                f"value {text[:40]!r} cannot be read: {exc}", _line(event)
            ) from None


def _tag_problem(tag: Any) -> str:
    return (
        f"tag {tag} makes a value JSON cannot hold; remove the tag (and quote the value if "
        "it should be text)"
    )


def _merged(obj: dict[Any, Any], merges: list[dict[Any, Any]]) -> dict[Any, Any]:
    """A mapping with merge keys: earlier merged mappings win over later ones, and the
    mapping's own keys over all of them."""
    merged: dict[Any, Any] = {}
    for source in reversed(merges):
        merged.update(source)
    merged.update(obj)
    return merged


def _line(event: Any) -> int | None:
    return event.start_mark.line + 1 if event.start_mark is not None else None


class _MergeKey:
    """The value of a `<<` key while its mapping is read."""


def _check_json(value: Any) -> None:
    """``value`` holds only JSON types (text keys); for small documents, after loading."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > MAX_DEPTH:
                raise YamlShapeError(_too_deep())
            for key, child in item.items():
                if not (key is None or isinstance(key, str | int | float | bool)):
                    raise YamlShapeError(_KEY_NOT_TEXT)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth > MAX_DEPTH:
                raise YamlShapeError(_too_deep())
            stack.extend((child, depth + 1) for child in item)
        elif not (item is None or isinstance(item, str | int | float | bool)):
            raise YamlShapeError(
                f"value {item!r} ({type(item).__name__}) is not a JSON type; quote it"
            )


def _too_deep() -> str:
    return f"nested more than {MAX_DEPTH} levels deep; no machine or config file needs that"
