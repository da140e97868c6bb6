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
    if _text_depth(text) <= MAX_DEPTH and "&" not in text and "!" not in text:
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


class _Frame:
    """An open collection while reading events."""

    __slots__ = ("anchor", "chars", "explicit", "is_map", "items", "key", "merges", "obj", "values")

    def __init__(self, is_map: bool, anchor: str | None) -> None:
        self.is_map = is_map
        self.anchor = anchor
        self.items = 0  # completed children; in a mapping, even counts are keys
        self.values = 0  # expanded values inside
        self.chars = 0  # expanded characters of scalars inside
        self.obj: Any = {} if is_map else []
        self.key: Any = None
        self.merges: list[dict[Any, Any]] = []
        self.explicit: set[Any] = set()


class _EventLoader:
    """Builds a document from parser events, checking it as it goes (no recursion, each
    alias measured, never expanded). Returns ``_UNBUILT`` for what it leaves to ruamel
    after checking it all."""

    def __init__(self, yaml: Any) -> None:
        self.yaml = yaml
        from ruamel.yaml.nodes import ScalarNode
        from ruamel.yaml.tag import Tag

        self.resolver = yaml.resolver
        self.constructor = yaml.constructor
        self._scalar_node = ScalarNode
        self._tag = Tag
        self.frames: list[_Frame] = [_Frame(False, None)]
        self.anchors: dict[str, tuple[Any, int, int]] = {}  # -> (value, values, chars)
        self.open_anchors: set[str] = set()
        self.building = True
        self.documents = 0
        # the tag of each plain scalar seen: the resolver's regular expressions decide
        # it from the text alone, and a machine repeats its words (keys, plugin names)
        self._resolved: dict[tuple[str, Any], str] = {}

    def load(self, text: str) -> Any:
        from ruamel.yaml.events import (
            AliasEvent,
            DocumentStartEvent,
            MappingEndEvent,
            MappingStartEvent,
            ScalarEvent,
            SequenceEndEvent,
            SequenceStartEvent,
        )

        # The loop of a large machine (about a hundred thousand events): plain scalars,
        # the common case, are handled inline; the line of an event is only looked up
        # to report a problem.
        frames = self.frames
        resolved = self._resolved
        resolve = self.resolver.resolve
        # the first characters an implicit tag may start with: a plain scalar beginning
        # with another is text, as the resolver finds after trying no expression
        table = self.resolver.versioned_resolver
        tagged_first = (
            None
            if table.get(None) or self.resolver.yaml_path_resolvers
            else frozenset(first for first in table if first is not None)
        )
        scalar_node = self._scalar_node
        json_tags = _JSON_TAGS
        for event in self.yaml.parse(text):
            kind = type(event)
            if kind is ScalarEvent:
                tag = event.tag
                text_value = event.value
                if tag is not None and str(tag) not in json_tags:
                    self._check_tag(tag, _line(event))
                if not self.building:
                    value = None
                elif tag is None and event.implicit[0]:
                    key = (text_value, event.implicit)
                    found = resolved.get(key)
                    if found is None:
                        if tagged_first is not None and text_value[:1] not in tagged_first:
                            found = _STR  # ("" is in the table: an empty one is null)
                        else:
                            found = str(resolve(scalar_node, text_value, event.implicit))
                        resolved[key] = found
                    value = text_value if found == _STR else self._scalar(event)
                elif tag is None:
                    value = text_value
                else:
                    value = self._scalar(event)
                if event.anchor is not None:
                    self.anchors[event.anchor] = (value, 1, len(text_value))
                frame = frames[-1]
                size = len(text_value)
                if (
                    self.building
                    and frame.values < MAX_VALUES
                    and frame.chars + size <= MAX_CHARS
                    and (
                        not frame.is_map
                        or frame.items % 2 == 0
                        or (frame.key is not _MergeKey and frame.key not in frame.explicit)
                    )
                ):
                    # an item, a key, or a new key's value: the common cases of _add,
                    # inline
                    if not frame.is_map:
                        frame.obj.append(value)
                    elif frame.items % 2 == 0:
                        frame.key = value
                    else:
                        frame.explicit.add(frame.key)
                        frame.obj[frame.key] = value
                    frame.items += 1
                    frame.values += 1
                    frame.chars += size
                else:
                    self._add(value, 1, size, event)
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                if event.tag is not None:
                    self._check_tag(event.tag, _line(event))
                if self._key_position():
                    raise YamlShapeError(_KEY_NOT_TEXT, _line(event))
                if len(frames) > MAX_DEPTH:
                    raise YamlShapeError(_too_deep(), _line(event))
                if event.anchor is not None:
                    self.open_anchors.add(event.anchor)
                frames.append(_Frame(kind is MappingStartEvent, event.anchor))
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                done = frames.pop()
                value = (
                    (done.obj if not done.merges else self._finish(done)) if self.building else None
                )
                if done.anchor is not None:
                    self.open_anchors.discard(done.anchor)
                    self.anchors[done.anchor] = (value, done.values + 1, done.chars)
                frame = frames[-1]
                if (
                    self.building
                    and frame.is_map
                    and frame.items % 2
                    and frame.key is not _MergeKey
                    and frame.key not in frame.explicit
                    and frame.values + done.values < MAX_VALUES
                    and frame.chars + done.chars <= MAX_CHARS
                ):
                    # a collection as a new key's value: the common case of _add, inline
                    frame.explicit.add(frame.key)
                    frame.obj[frame.key] = value
                    frame.items += 1
                    frame.values += done.values + 1
                    frame.chars += done.chars
                else:
                    self._add(value, done.values + 1, done.chars, event)
            elif kind is AliasEvent:
                if event.anchor in self.open_anchors:
                    raise YamlShapeError(
                        "an alias refers to a value that contains it (a cycle); remove the alias",
                        _line(event),
                    )
                if event.anchor not in self.anchors:
                    self.building = False  # an undefined alias: ruamel reports it
                value, values, chars = self.anchors.get(event.anchor, (None, 1, 0))
                if self._key_position() and isinstance(value, dict | list):
                    raise YamlShapeError(_KEY_NOT_TEXT, _line(event))
                self._add(value, values, chars, event)
            elif kind is DocumentStartEvent:
                self.documents += 1
                if self.documents > 1:
                    self.building = False  # ruamel says what is wrong with that
        root = frames[0]
        if not self.building:
            return _UNBUILT
        return root.obj[0] if root.obj else None

    def _key_position(self) -> bool:
        frame = self.frames[-1]
        return frame.is_map and frame.items % 2 == 0

    @staticmethod
    def _check_tag(tag: Any, line: int | None) -> None:
        if tag is not None and str(tag) not in _JSON_TAGS:
            raise YamlShapeError(
                f"tag {tag} makes a value JSON cannot hold; remove the tag (and quote the "
                "value if it should be text)",
                line,
            )

    def _scalar(self, event: Any) -> Any:
        if event.tag is not None:
            tag = str(event.tag)
        elif event.implicit[0]:
            key = (event.value, event.implicit)
            tag = self._resolved.get(key, "")
            if not tag:
                resolved = self.resolver.resolve(self._scalar_node, event.value, event.implicit)
                tag = self._resolved[key] = str(resolved)
        else:
            return event.value
        if tag == _STR:
            return event.value
        if tag == _MERGE:
            return _MergeKey
        node = self._scalar_node(self._tag(suffix=tag), event.value)
        try:
            return self.constructor.construct_object(node, deep=True)
        except _UNREADABLE as exc:
            raise YamlShapeError(f"value {event.value[:40]!r} cannot be read: {exc}") from None

    def _add(self, value: Any, values: int, chars: int, event: Any) -> None:
        frame = self.frames[-1]
        if self.building:
            if not frame.is_map:
                frame.obj.append(value)
            elif frame.items % 2 == 0:  # collections as keys were refused as they began
                frame.key = value
            elif frame.key is _MergeKey:
                merged = value if isinstance(value, list) else [value]
                if not all(isinstance(m, dict) for m in merged):
                    self.building = False  # ruamel says what is wrong with that
                else:
                    frame.merges.extend(merged)
            elif frame.key in frame.explicit:
                self.building = False  # a duplicate key: ruamel reports it
            else:
                frame.explicit.add(frame.key)
                frame.obj[frame.key] = value
        frame.items += 1
        frame.values += values
        frame.chars += chars
        if frame.values > MAX_VALUES or frame.chars > MAX_CHARS:
            raise YamlShapeError(
                f"its aliases expand to more than {MAX_VALUES:,} values or "
                f"{MAX_CHARS:,} characters; write the values out, or use fewer aliases "
                "(and merge keys) of aliases",
                _line(event),
            )

    @staticmethod
    def _finish(frame: _Frame) -> Any:
        if not frame.merges:
            return frame.obj
        merged: dict[Any, Any] = {}
        for source in reversed(frame.merges):  # earlier mappings win over later ones
            merged.update(source)
        merged.update(frame.obj)  # and the mapping's own keys over all of them
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
