"""Typed results and records, and their one JSON form.

Every result a command returns, and every record the store keeps, is a dataclass whose
JSON form is derived from its fields by :func:`as_json`, never written by hand: a
field's name is its key (``field(metadata=key("from"))`` gives it another one), nested
dataclasses become objects, tuples become lists, ``None`` stays ``null``, and fields
with ``metadata=INTERNAL`` are left out.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
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
    """(field name, JSON key) of a dataclass's fields in the JSON form, once per class."""
    return tuple(
        (f.name, f.metadata.get(JSON_KEY, f.name))
        for f in dataclasses.fields(cls)
        if not f.metadata.get("internal")
    )


def as_json(value: Any) -> Any:
    """``value`` as plain JSON data: dataclasses by their fields, recursively."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {key: as_json(getattr(value, name)) for name, key in _keys(type(value))}
    if isinstance(value, Mapping):
        return {str(k): as_json(v) for k, v in value.items()}
    return value


class Result:
    """Base of the typed results: ``to_json()`` is :func:`as_json` of the fields."""

    def to_json(self) -> dict[str, Any]:
        data = as_json(self)
        assert isinstance(data, dict)
        return data
