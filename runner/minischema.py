"""A small, fast JSON Schema checker for the runner's own schemas.

`jsonschema` is complete but takes ~80 ms to import, more than a whole `runner status`
may take. The runner's schemas (state file, machine.yaml, the built-in plugins'
parameters) use a handful of keywords; this module checks exactly those (and refuses a
schema that uses any other, so it can never silently check less): ``type``, ``const``,
``enum``, ``pattern``, ``minimum``, ``exclusiveMinimum``, ``maximum``, ``minLength``,
``minItems``, ``minProperties``, ``uniqueItems``, ``propertyNames``, ``required``,
``properties``, ``additionalProperties`` (boolean or schema), ``items``, ``oneOf`` and
local ``$ref`` to ``#/$defs/...``. Annotations (``description``,
``title``, ``default``, ``$schema``, ``$id``, ``$defs``) are ignored.

Tests compare its verdicts with `jsonschema` on valid and broken documents.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeAlias

    #: ``check(value, path)``: what is wrong with ``value`` at ``path`` (the caller's text,
    #: often "", and below it ``(parent path, key)`` pairs), or None.
    Check: TypeAlias = Callable[[Any, Any], "str | None"]


_ANNOTATIONS = frozenset(
    {"description", "title", "default", "$schema", "$id", "$defs", "examples", "$comment"}
)
_KNOWN = (
    frozenset(
        {
            "type",
            "const",
            "enum",
            "pattern",
            "minimum",
            "minLength",
            "minItems",
            "maximum",
            "exclusiveMinimum",
            "minProperties",
            "uniqueItems",
            "propertyNames",
            "required",
            "properties",
            "additionalProperties",
            "items",
            "oneOf",
            "$ref",
        }
    )
    | _ANNOTATIONS
)


class UnsupportedSchema(ValueError):
    """The schema uses a keyword this checker does not implement."""


def _is_type(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    raise UnsupportedSchema(f"unknown type {name!r}")


#: :func:`_is_type` of each type, as one test.
_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "string": lambda value: isinstance(value, str),
    "integer": lambda value: _is_type(value, "integer"),
    "number": lambda value: _is_type(value, "number"),
    "boolean": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
}


def _type_problem(value: Any, path: Any, types: list[str]) -> str:
    return f"{_where(path)}: {_type_name(value)} is not of type {' or '.join(types)}"


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _unique(items: list[Any]) -> bool:
    seen: list[Any] = []
    for item in items:
        if any(_equal(item, other) for other in seen):
            return False
        seen.append(item)
    return True


def _where(path: Any) -> str:
    """The JSON pointer of ``path``: a checker's text, or ``(parent path, key)`` as the
    checks pass it down (joined only for a message: a valid document makes no text)."""
    keys = []
    while type(path) is tuple:
        path, key = path
        keys.append(key)
    return (path + "".join(f"/{key}" for key in reversed(keys))) or "/"


def _rule(ok: Callable[[Any], bool], why: Callable[[Any], str]) -> Check:
    def check(value: Any, path: Any) -> str | None:
        return None if ok(value) else f"{_where(path)}: {why(value)}"

    return check


#: The types whose test is one ``isinstance`` (integers and numbers leave out booleans).
_CLASSES: dict[str, type] = {"object": dict, "array": list, "string": str, "boolean": bool}


def compile_schema(schema: dict[str, Any], *, lazy: bool = False) -> Check:
    """A function ``check(value, path) -> problem | None`` for ``schema``.

    With ``lazy``, the check of a property is built when a value first has that
    property, so that a command that checks one small document (`runner status` its
    record) builds only what the document uses; an unsupported keyword then shows only
    when a value reaches it, so ``lazy`` is for the project's own schemas, which the
    tests compile whole."""
    defs = schema.get("$defs", {})
    compiled_refs: dict[str, Check] = {}

    def later(node: Any) -> Check:
        built: list[Check] = []

        def check(value: Any, path: Any) -> str | None:
            if not built:
                built.append(build(node))
            return built[0](value, path)

        return check

    sub = later if lazy else None

    building: set[str] = set()
    #: the checks that test only a type, and its classes
    only_type: dict[Check, tuple[type, ...]] = {}

    def ref_check(ref: str) -> Check:
        """The check of a definition, built once; a definition that refers to itself
        (directly or not) is looked up as it is checked."""
        if not ref.startswith("#/$defs/"):
            raise UnsupportedSchema(f"only local $defs references are supported, not {ref!r}")
        name = ref[len("#/$defs/") :]
        if name not in defs:
            raise UnsupportedSchema(f"no definition {name!r} for {ref!r}")
        if name in compiled_refs:
            return compiled_refs[name]
        if name in building:

            def check(value: Any, path: Any) -> str | None:
                return compiled_refs[name](value, path)

            return check
        building.add(name)
        compiled_refs[name] = build(defs[name])
        building.discard(name)
        return compiled_refs[name]

    def build(node: Any) -> Check:
        if node is True or node == {}:
            return lambda value, path: None
        if node is False:
            return lambda value, path: f"{_where(path)}: no value is allowed here"
        unknown = set(node) - _KNOWN
        if unknown:
            raise UnsupportedSchema(f"unsupported keywords {sorted(unknown)}")
        checks: list[Check] = []
        classes: tuple[type, ...] | None = None  # the type's classes, when one isinstance
        if "$ref" in node:
            checks.append(ref_check(node["$ref"]))
        if "type" in node:
            types = node["type"] if isinstance(node["type"], list) else [node["type"]]
            try:
                tests = [_TYPE_TESTS[t] for t in types]
            except (KeyError, TypeError):
                raise UnsupportedSchema(f"unknown type in {types!r}") from None
            test = tests[0] if len(tests) == 1 else lambda v: any(t(v) for t in tests)

            def check_type(
                value: Any, path: Any, types: list[str] = types, test: Callable[[Any], bool] = test
            ) -> str | None:
                if test(value):
                    return None
                return _type_problem(value, path, types)

            checks.append(check_type)
            if all(t in _CLASSES for t in types):
                classes = tuple(_CLASSES[t] for t in types)
        if "const" in node:
            const = node["const"]
            checks.append(_rule(lambda v: _equal(v, const), lambda v: f"{v!r} is not {const!r}"))
        if "enum" in node:
            choices = node["enum"]
            checks.append(
                _rule(
                    lambda v: any(_equal(v, x) for x in choices),
                    lambda v: f"{v!r} is not one of {choices!r}",
                )
            )
        if "pattern" in node:
            regex = re.compile(node["pattern"])

            def check_pattern(value: Any, path: Any, search: Any = regex.search) -> str | None:
                if not isinstance(value, str) or search(value):
                    return None
                return f"{_where(path)}: {value!r} does not match {regex.pattern!r}"

            checks.append(check_pattern)
        if "minimum" in node:
            low = node["minimum"]
            checks.append(
                _rule(
                    lambda v: not _is_type(v, "number") or v >= low,
                    lambda v: f"{v!r} is less than {low}",
                )
            )
        if "exclusiveMinimum" in node:
            above = node["exclusiveMinimum"]
            checks.append(
                _rule(
                    lambda v: not _is_type(v, "number") or v > above,
                    lambda v: f"{v!r} is less than or equal to {above}",
                )
            )
        if "minLength" in node:
            min_length = int(node["minLength"])

            def check_length(value: Any, path: Any, least: int = min_length) -> str | None:
                if not isinstance(value, str) or len(value) >= least:
                    return None
                return f"{_where(path)}: {value!r} is shorter than {least}"

            checks.append(check_length)
        if "maximum" in node:
            high = node["maximum"]
            checks.append(
                _rule(
                    lambda v: not _is_type(v, "number") or v <= high,
                    lambda v: f"{v!r} is greater than {high}",
                )
            )
        if "minProperties" in node:
            min_props = int(node["minProperties"])
            checks.append(
                _rule(
                    lambda v: not isinstance(v, dict) or len(v) >= min_props,
                    lambda v: f"has fewer than {min_props} properties",
                )
            )
        if node.get("uniqueItems") is True:
            checks.append(
                _rule(
                    lambda v: not isinstance(v, list) or _unique(v),
                    lambda v: "has repeated items",
                )
            )
        if "propertyNames" in node:
            name_check = build(node["propertyNames"])

            def check_names(value: Any, path: Any, name_check: Check = name_check) -> str | None:
                if not isinstance(value, dict):
                    return None
                for key in value:
                    problem = name_check(key, (path, key))
                    if problem:
                        return problem
                return None

            checks.append(check_names)
        if "minItems" in node:
            min_items = int(node["minItems"])
            checks.append(
                _rule(
                    lambda v: not isinstance(v, list) or len(v) >= min_items,
                    lambda v: f"has fewer than {min_items} items",
                )
            )
        if "required" in node:
            required = list(node["required"])

            def check_required(value: Any, path: Any, required: list[str] = required) -> str | None:
                if not isinstance(value, dict):
                    return None
                for key in required:
                    if key not in value:
                        return f"{_where(path)}: {key!r} is a required property"
                return None

            checks.append(check_required)
        if "properties" in node or "additionalProperties" in node:
            props = {k: (sub or build)(v) for k, v in node.get("properties", {}).items()}
            extra_node = node.get("additionalProperties", True)
            extra = build(extra_node)

            # properties whose whole check is their type: tested here, without a call
            typed = {k: only_type[c] for k, c in props.items() if c in only_type}
            # a map of values whose whole check is their type (step name to digest):
            # when every value is of exactly such a class, one pass in C says so
            uniform = frozenset(only_type[extra]) if not props and extra in only_type else None

            def check_object(
                value: Any,
                path: Any,
                props: dict[str, Check] = props,
                extra: Check = extra,
                closed: bool = extra_node is False,
                typed: dict[str, tuple[type, ...]] = typed,
                uniform: frozenset[type] | None = uniform,
            ) -> str | None:
                if not isinstance(value, dict):
                    return None
                if uniform is not None and uniform.issuperset(map(type, value.values())):
                    return None
                for key, item in value.items():
                    classes = typed.get(key)
                    if classes is not None and isinstance(item, classes):
                        continue
                    sub = props.get(key)
                    if sub is None:
                        if closed:
                            return f"{_where(path)}: unknown property {key!r}"
                        sub = extra
                    problem = sub(item, (path, key))
                    if problem:
                        return problem
                return None

            checks.append(check_object)
        if "items" in node:
            item_check = build(node["items"])

            item_classes = only_type.get(item_check)
            exact = frozenset(item_classes or ())

            def check_items(
                value: Any,
                path: Any,
                item_check: Check = item_check,
                classes: tuple[type, ...] | None = item_classes,
                exact: frozenset[type] = exact,
            ) -> str | None:
                if not isinstance(value, list):
                    return None
                if classes is not None and (
                    exact.issuperset(map(type, value))
                    or all(isinstance(item, classes) for item in value)
                ):
                    return None
                for index, item in enumerate(value):
                    problem = item_check(item, (path, index))
                    if problem:
                        return problem
                return None

            checks.append(check_items)
        if "oneOf" in node:
            options = [build(option) for option in node["oneOf"]]
            # an option whose type the value does not have fails without being asked
            # (nor its message made); the messages are made when no option passes
            gates = [
                _TYPE_TESTS.get(option["type"])
                if isinstance(option, dict) and isinstance(option.get("type"), str)
                else None
                for option in node["oneOf"]
            ]

            def check_one_of(
                value: Any, path: Any, options: list[Check] = options, gates: Any = gates
            ) -> str | None:
                passed = 0
                for option, gate in zip(options, gates, strict=True):
                    if (gate is None or gate(value)) and option(value, path) is None:
                        passed += 1
                if passed == 1:
                    return None
                problems = [option(value, path) for option in options]
                passed = sum(1 for problem in problems if problem is None)
                if passed == 1:
                    return None
                if passed == 0:
                    return min((p for p in problems if p), key=len)
                return f"{_where(path)}: matches more than one of the allowed forms"

            checks.append(check_one_of)

        if classes is not None and "$ref" not in node:
            # the type, first of the checks, tested here with one isinstance (no call)
            def check_typed(
                value: Any,
                path: Any,
                classes: tuple[type, ...] = classes,
                first: Check = checks[0],
                rest: list[Check] = checks[1:],
            ) -> str | None:
                if not isinstance(value, classes):
                    return first(value, path)
                for check in rest:
                    problem = check(value, path)
                    if problem:
                        return problem
                return None

            if len(checks) == 1:
                only_type[check_typed] = classes
            return check_typed

        if len(checks) == 1:
            return checks[0]  # one call less for each value of a large document

        def check_all(value: Any, path: Any, checks: list[Check] = checks) -> str | None:
            for check in checks:
                problem = check(value, path)
                if problem:
                    return problem
            return None

        return check_all

    for name in defs:
        ref_check(f"#/$defs/{name}")  # refuse unsupported keywords up front, not on first use
    return build(schema)


# --- is a schema a valid JSON Schema? -----------------------------------------------------

#: The keywords of the JSON Schema 2020-12 vocabularies (and the older ones its
#: meta-schema still describes). Any other keyword is an annotation of the user's own
#: (``secret``, ``free_port``): valid with any value.
_VOCABULARY = frozenset(
    {
        *("$schema", "$id", "$ref", "$anchor", "$dynamicRef", "$dynamicAnchor"),
        *("$vocabulary", "$comment", "$defs", "$recursiveRef", "$recursiveAnchor"),
        *("prefixItems", "items", "contains", "additionalProperties", "properties"),
        *("patternProperties", "dependentSchemas", "propertyNames", "if", "then", "else"),
        *("allOf", "anyOf", "oneOf", "not", "unevaluatedItems", "unevaluatedProperties"),
        *("type", "const", "enum", "multipleOf", "maximum", "exclusiveMaximum", "minimum"),
        *("exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems"),
        *("uniqueItems", "maxContains", "minContains", "maxProperties", "minProperties"),
        *("required", "dependentRequired", "title", "description", "default", "deprecated"),
        *("readOnly", "writeOnly", "examples", "format", "contentEncoding"),
        *("contentMediaType", "contentSchema", "definitions", "dependencies"),
    }
)
_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _regex(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        re.compile(value)
    except re.error:
        return False
    return True


def _type_value(value: Any) -> bool:
    if isinstance(value, str):
        return value in _TYPES
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(t, str) and t in _TYPES for t in value)
        and len(set(value)) == len(value)
    )


_VALUE_RULES: dict[str, Callable[[Any], bool]] = {
    "type": _type_value,
    "const": lambda v: True,
    "default": lambda v: True,
    "enum": lambda v: isinstance(v, list),
    "pattern": _regex,
    "minimum": _number,
    "maximum": _number,
    "exclusiveMinimum": _number,
    "minLength": _count,
    "minItems": _count,
    "minProperties": _count,
    "uniqueItems": lambda v: isinstance(v, bool),
    "required": lambda v: (
        isinstance(v, list) and all(isinstance(k, str) for k in v) and len(set(v)) == len(v)
    ),
    "$ref": lambda v: isinstance(v, str),
    "$schema": lambda v: isinstance(v, str),
    "$id": lambda v: isinstance(v, str),
    "$comment": lambda v: isinstance(v, str),
    "title": lambda v: isinstance(v, str),
    "description": lambda v: isinstance(v, str),
    "examples": lambda v: isinstance(v, list),
}
#: Keywords whose value is a schema, a mapping of schemas, or a list of schemas.
_SUBSCHEMA = frozenset({"additionalProperties", "items", "propertyNames"})
_SUBSCHEMA_MAPS = frozenset({"properties", "$defs"})


def well_formed(schema: Any) -> bool:
    """Whether ``schema`` is certainly a valid JSON Schema (2020-12): it uses only the
    keywords this module checks (plus keywords of the user's own) and each one has a
    value of the right shape. False means "not sure": ask `jsonschema`, which says what
    is wrong, if anything (so the common case never imports it)."""
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict):
        return False
    for keyword, value in schema.items():
        if not isinstance(keyword, str):
            return False
        if keyword in _SUBSCHEMA:
            ok = well_formed(value)
        elif keyword in _SUBSCHEMA_MAPS:
            ok = isinstance(value, dict) and all(well_formed(v) for v in value.values())
        elif keyword == "oneOf":
            ok = isinstance(value, list) and len(value) > 0 and all(well_formed(v) for v in value)
        elif keyword in _VALUE_RULES:
            ok = _VALUE_RULES[keyword](value)
        else:
            ok = keyword not in _VOCABULARY  # one of the user's own: anything goes
        if not ok:
            return False
    return True
