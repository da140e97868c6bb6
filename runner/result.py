"""Typed results and records, and their one JSON form.

Every result a command returns, and every record the store keeps, is a dataclass (or a
light :func:`runner.struct.struct` class, for the modules every command imports) whose
JSON form is derived from its fields by :func:`as_json`, never written by hand: a
field's name is its key (``field(metadata=key("from"))`` gives it another one), nested
dataclasses become objects, tuples become lists, ``None`` stays ``null``, and fields
with ``metadata=INTERNAL`` are left out.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["API_VERSION", "INTERNAL", "JSON_KEY", "Result", "as_json", "key"]

#: The version of the JSON documents of ``--output json`` (``schemas/output.schema.json``);
#: it grows when a key is removed, renamed or changes its meaning.
API_VERSION = 1

#: The metadata name under which a field gives its JSON key.
JSON_KEY = "json"


#: Field metadata of a field that is not part of the JSON form (a live object, say).
INTERNAL: Mapping[str, bool] = {"internal": True}


def key(name: str) -> dict[str, str]:
    """Field metadata that names the field ``name`` in JSON (``from`` is a keyword)."""
    return {JSON_KEY: name}


@functools.cache
def _keys(cls: type) -> tuple[tuple[str, str], ...]:
    """(field name, JSON key) of a dataclass's or struct's fields in the JSON form, once
    per class."""
    specs = getattr(cls, "__struct_fields__", None)
    if specs is None:
        import dataclasses  # a dataclass: its module is loaded already

        specs = dataclasses.fields(cls)
    return tuple(
        (f.name, f.metadata.get(JSON_KEY, f.name)) for f in specs if not f.metadata.get("internal")
    )


#: The classes :func:`as_json` returns as they are, tested first by identity (a record's
#: save converts thousands of values; ``isinstance`` against a union is the slow test).
_PLAIN = frozenset({str, int, float, bool, type(None)})
_STR = frozenset({str})


def as_json(value: Any) -> Any:
    """``value`` as plain JSON data: dataclasses by their fields, recursively."""
    kind = value.__class__
    if kind in _PLAIN:
        return value
    if kind is dict:
        if _PLAIN.issuperset(map(type, value.values())) and _STR.issuperset(map(type, value)):
            return dict(value)  # a map of plain values (step name to digest): copied in C
        return {k if k.__class__ is str else str(k): as_json(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        if _PLAIN.issuperset(map(type, value)):
            return list(value)
        return [as_json(v) for v in value]
    if isinstance(value, str | int | float | bool):  # subclasses: an enum's value, say
        return value
    if isinstance(value, dict):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    if hasattr(kind, "__struct_fields__") or hasattr(kind, "__dataclass_fields__"):
        return {key: as_json(getattr(value, name)) for name, key in _keys(kind)}
    if isinstance(value, Mapping):
        return {str(k): as_json(v) for k, v in value.items()}
    return value


class Result:
    """Base of the typed results: ``to_json()`` is :func:`as_json` of the fields."""

    def to_json(self) -> dict[str, Any]:
        data = as_json(self)
        assert isinstance(data, dict)
        return data
