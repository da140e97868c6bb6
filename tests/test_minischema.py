"""runner.minischema agrees with jsonschema on the state file, machine and plugin schemas."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.minischema import UnsupportedSchema, compile_schema, well_formed
from runner.resources import schema_path
from tests.conftest import failed_record, format_1

SCHEMA = json.loads(schema_path("state").read_text())
CHECK = compile_schema(SCHEMA)
#: The form the store uses: each property's check built when a record first has it.
LAZY = compile_schema(SCHEMA, lazy=True)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

#: The design's example record: a failed provision, every optional field set.
VALID: dict[str, Any] = failed_record().to_json()

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, width=32)
    | st.text(max_size=8)
    | st.sampled_from(["demo", "sha256:" + "b" * 64, "2026-01-01T00:00:00Z"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _mutate(doc: Any, data: st.DataObject, replacement: Any, delete: bool) -> tuple:
    """Replace (or delete) one value of ``doc`` drawn by ``data``, in place; its path."""
    path = data.draw(st.sampled_from(_paths(doc)[1:]))
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return path


def test_the_valid_record_passes_both() -> None:
    assert VALIDATOR.is_valid(VALID)
    assert CHECK(VALID, "") is None
    old = format_1(VALID)  # as a format 1 runner wrote it
    assert VALIDATOR.is_valid(old)
    assert CHECK(old, "") is None
    assert LAZY(VALID, "") is None and LAZY(old, "") is None


@settings(max_examples=400, deadline=None)
@given(data=st.data(), replacement=JSON, delete=st.booleans())
def test_verdicts_agree_on_mutated_records(
    data: st.DataObject, replacement: Any, delete: bool
) -> None:
    record = copy.deepcopy(VALID)
    path = _mutate(record, data, replacement, delete)
    expected = VALIDATOR.is_valid(record)
    problem = CHECK(record, "")
    assert (problem is None) == expected, (path, replacement, problem)
    assert LAZY(record, "") == problem


@settings(max_examples=200, deadline=None)
@given(extra_key=st.text(min_size=1, max_size=6), value=JSON)
def test_unknown_keys_are_refused_like_jsonschema(extra_key: str, value: Any) -> None:
    record = copy.deepcopy(VALID)
    record["run"][extra_key] = value
    assert (CHECK(record, "") is None) == VALIDATOR.is_valid(record)


def test_a_schema_with_an_unsupported_keyword_is_refused() -> None:
    with pytest.raises(UnsupportedSchema):
        compile_schema({"type": "object", "patternProperties": {"x": {}}})


@pytest.mark.parametrize("kind", ["text", ["string", "date"], 5])
def test_a_schema_with_an_unknown_type_is_refused_when_compiled(kind: Any) -> None:
    """Not when a value is checked: the caller falls back to jsonschema up front."""
    with pytest.raises(UnsupportedSchema):
        compile_schema({"properties": {"x": {"type": kind}}})


def test_a_reference_to_no_definition_is_refused_when_compiled() -> None:
    with pytest.raises(UnsupportedSchema, match="no definition 'gone'"):
        compile_schema({"properties": {"x": {"$ref": "#/$defs/gone"}}, "$defs": {}})


def test_a_definition_that_refers_to_itself_checks_every_level() -> None:
    schema = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"child": {"$ref": "#/$defs/node"}, "name": {"type": "string"}},
            }
        },
        "$ref": "#/$defs/node",
    }
    check = compile_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    deep = {"child": {"child": {"child": {"name": "leaf"}}}}
    assert check(deep, "") is None and validator.is_valid(deep)
    deep["child"]["child"]["child"]["name"] = 5
    assert check(deep, "") == "/child/child/child/name: number is not of type string"
    assert not validator.is_valid(deep)


@pytest.mark.parametrize(
    ("schema", "fits", "value", "problem"),
    [
        ({"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]}, 2, -1, "less than 0"),
        ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, "a", [], "not of type"),
        ({"oneOf": [{"type": "number"}, {"type": "integer"}]}, 1.5, 3, "more than one"),
        ({"oneOf": [{"type": ["string", "null"]}, {"type": "null"}]}, "a", None, "more than one"),
    ],
)
def test_one_of_says_why_no_option_or_several_fit(
    schema: dict[str, Any], fits: Any, value: Any, problem: str
) -> None:
    """An option of another type is passed over without being checked, and still
    explains the value when no option fits."""
    check = compile_schema({"properties": {"x": schema}})
    validator = jsonschema.Draft202012Validator(schema)
    assert not validator.is_valid(value) and validator.is_valid(fits)
    found = check({"x": value}, "")
    assert found is not None and found.startswith("/x: ") and problem in found, found
    assert check({"x": fits}, "") is None


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("integer", [1, 2.0, -3], [1.5, True, "1", None]),
        ("number", [1, 2.5], [True, "1", None]),
        ("boolean", [True, False], [0, 1, None]),
        ("null", [None], [0, "", False]),
        (["string", "null"], ["x", None], [1, [], {}]),
    ],
)
def test_types_are_checked_as_jsonschema_checks_them(
    kind: Any, good: list[Any], bad: list[Any]
) -> None:
    schema = {"type": kind}
    check = compile_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for value in good:
        assert check(value, "") is None and validator.is_valid(value), value
    for value in bad:
        assert check(value, "") is not None and not validator.is_valid(value), value


class _Name(str):
    """A string of a class of its own."""


@pytest.mark.parametrize("kind", ["string", "integer", "number", "boolean", ["string", "null"]])
def test_maps_and_lists_of_one_type_are_checked_item_by_item_where_one_is_off(kind: Any) -> None:
    item = {"type": kind}
    schemas = [{"type": "object", "additionalProperties": item}, {"type": "array", "items": item}]
    samples: list[Any] = [
        *(f"s{i}" for i in range(50)),
        _Name("n"),
        *range(50),
        True,
        1.5,
        2.0,
        None,
    ]
    for schema in schemas:
        check = compile_schema(schema)
        validator = jsonschema.Draft202012Validator(schema)
        for chosen in (samples[:50], samples[:51], samples[51:101], samples):
            for off in (None, *samples[-5:]):
                values = [*chosen, off] if off is not None or chosen is samples else chosen
                doc: Any = (
                    {f"k{i}": v for i, v in enumerate(values)}
                    if schema["type"] == "object"
                    else values
                )
                verdict = check(doc, "")
                assert (verdict is None) == validator.is_valid(doc), (schema, values, verdict)


MACHINE_SCHEMA = json.loads(schema_path("machine").read_text())
MACHINE_CHECK = compile_schema(MACHINE_SCHEMA)
MACHINE_VALIDATOR = jsonschema.Draft202012Validator(MACHINE_SCHEMA)


def _shipped_machine() -> dict[str, Any]:
    from ruamel.yaml import YAML

    from runner.resources import shipped_machine

    return YAML(typ="safe").load(shipped_machine().read_text())


def test_the_shipped_machine_passes_both() -> None:
    doc = _shipped_machine()
    assert MACHINE_VALIDATOR.is_valid(doc)
    assert MACHINE_CHECK(doc, "") is None


@settings(max_examples=400, deadline=None)
@given(data=st.data(), replacement=JSON, delete=st.booleans())
def test_verdicts_agree_on_mutated_machines(
    data: st.DataObject, replacement: Any, delete: bool
) -> None:
    doc = _shipped_machine()
    path = _mutate(doc, data, replacement, delete)
    assert (MACHINE_CHECK(doc, "") is None) == MACHINE_VALIDATOR.is_valid(doc), (path, replacement)


# --- the built-in plugins' `with` schemas (validate checks every step's literal `with`)


def _builtin_plugins() -> dict[str, Any]:
    from runner.run.registry import default_registry

    registry = default_registry()
    return {name: registry.get(name) for name in registry.names()}


PLUGINS = _builtin_plugins()


def _shipped_withs() -> list[tuple[str, dict[str, Any]]]:
    return [
        (step["uses"], step.get("with", {}))
        for phase in _shipped_machine()["phases"]
        for step in phase["steps"]
        if step["uses"] in PLUGINS
    ]


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_every_builtin_plugin_schema_is_within_the_fast_subset(name: str) -> None:
    compile_schema(PLUGINS[name].params_schema)  # raises UnsupportedSchema otherwise


@settings(max_examples=400, deadline=None)
@given(data=st.data(), replacement=JSON, delete=st.booleans())
def test_verdicts_agree_on_mutated_step_parameters(
    data: st.DataObject, replacement: Any, delete: bool
) -> None:
    uses, params = data.draw(st.sampled_from(_shipped_withs()))
    params = copy.deepcopy(params)
    if _paths(params)[1:]:
        _mutate(params, data, replacement, delete)
    schema = PLUGINS[uses].params_schema
    fast = compile_schema(schema)(params, "") is None
    assert fast == jsonschema.Draft202012Validator(schema).is_valid(params), (uses, params)


# --- is a schema valid? (plugin schemas and a machine's `inputs` are checked at load) ---


def _schema_is_valid(schema: Any) -> bool:
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError:
        return False
    return True


def _shipped_inputs() -> dict[str, Any]:
    return dict(_shipped_machine()["inputs"])


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_the_builtin_plugin_schemas_are_well_formed_without_jsonschema(name: str) -> None:
    assert well_formed(PLUGINS[name].params_schema)


def test_the_shipped_inputs_schema_is_well_formed_without_jsonschema() -> None:
    assert well_formed(_shipped_inputs())


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "strin"},
        {"type": []},
        {"minLength": -1},
        {"minLength": "3"},
        {"minimum": True},
        {"required": ["a", "a"]},
        {"required": "a"},
        {"pattern": "("},
        {"properties": {"a": {"type": 3}}},
        {"additionalProperties": 1},
        {"oneOf": []},
        {"enum": "a"},
        {"uniqueItems": "yes"},
    ],
    ids=repr,
)
def test_a_broken_schema_is_never_called_well_formed(schema: dict[str, Any]) -> None:
    assert not _schema_is_valid(schema)
    assert not well_formed(schema)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), replacement=JSON, delete=st.booleans())
def test_a_well_formed_schema_is_one_jsonschema_accepts(
    data: st.DataObject, replacement: Any, delete: bool
) -> None:
    """Mutations of the shipped inputs schema and of the plugins' schemas: whenever
    `well_formed` says yes, jsonschema's meta-schema check agrees (when it says no,
    jsonschema decides)."""
    schemas = [_shipped_inputs(), *(p.params_schema for p in PLUGINS.values())]
    schema = copy.deepcopy(data.draw(st.sampled_from(schemas)))
    path = _mutate(schema, data, replacement, delete)
    if well_formed(schema):
        assert _schema_is_valid(schema), (path, replacement)
