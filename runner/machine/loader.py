"""Loading machine.yaml, in order: YAML → JSON Schema → semantic checks → dataclasses.

Each stage collects every problem it finds; the first stage with problems stops the
pipeline with one :class:`~runner.errors.MachineError` listing them all. Line and
column numbers are looked up only when there is something to report: the fast C
parser reads the file, and the round-trip parser (which keeps positions) reads it
again only to place the errors.
"""

from __future__ import annotations

import functools
import gc
import json
import os
from collections import defaultdict, deque
from typing import Any, Protocol

from runner import resources
from runner.errors import MachineError, Problem, did_you_mean
from runner.files import TooLarge, read_limited, sha256
from runner.machine.model import (
    ANY,
    CheckDef,
    MachineDef,
    PhaseDef,
    Retry,
    StateDef,
    StepDef,
    parse_duration,
)
from runner.machine.templated import template_strings
from runner.minischema import well_formed


class PluginCatalog(Protocol):
    """What the loader asks of the installed step plugins (the run package's
    ``PluginCatalog`` is one) to check every `uses` and `with`."""

    def names(self) -> list[str]: ...

    def get(self, name: str) -> object | None: ...

    def param_errors(
        self, name: str, params: Any, templated: frozenset[str] = ...
    ) -> list[tuple[tuple[str | int, ...], str]]: ...


# Words YAML 1.1 tools (and many editors) read as booleans: never a state name.
YAML11_BOOLEANS = frozenset(
    {"on", "off", "yes", "no", "y", "n", "true", "false", "ON", "OFF", "YES", "NO"}
)

# The vocabulary the loader understands; tests compare it with the JSON Schema.


class _Found:
    """A problem found, before its line is looked up (a plain class: the loader runs on
    the start of commands that build no dataclass)."""

    __slots__ = ("at_key", "hint", "message", "path", "value")

    def __init__(
        self,
        path: tuple[str | int, ...],
        message: str,
        hint: str | None = None,
        at_key: bool = False,
        value: Any = None,
    ) -> None:
        self.path = path
        self.message = message
        self.hint = hint
        self.at_key = at_key
        self.value = value


def load_machine(
    path: str | os.PathLike[str],
    registry: PluginCatalog | None = None,
    *,
    templates: bool = True,
) -> MachineDef:
    """Load and validate ``path``. ``registry`` enables the `uses`/`with` checks;
    without ``templates`` the Jinja2 syntax of `when`, `with` and recovery texts is not
    checked (the structure is: what a command that runs no step needs)."""
    shown = os.fspath(path)  # plain paths: a read-only command never imports pathlib
    try:
        raw = read_limited(shown, "machine")
    except TooLarge as exc:
        raise MachineError(shown, [Problem(shown, f"the file {exc}")]) from None
    except FileNotFoundError:
        raise MachineError(
            shown,
            [Problem(shown, "file not found", hint="pass --machine FILE or create machine.yaml")],
        ) from None
    except OSError as exc:
        raise MachineError(
            shown, [Problem(shown, f"cannot read the file: {exc.strerror}")]
        ) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MachineError(
            shown, [Problem(shown, f"not UTF-8 text (byte {exc.start})", hint="save it as UTF-8")]
        ) from exc
    digest = "sha256:" + sha256(raw).hexdigest()
    # Loading makes many small objects and frees none of them until it is done: the
    # cycle collector would only rescan them again and again (a third of the time of a
    # large machine). Aliases may make cycles; the collector runs once loading ends.
    collecting = gc.isenabled()
    gc.disable()
    try:
        doc = _parse(shown, text)
        found = _schema_problems(doc)
        if not found:
            found = _semantic_problems(doc, registry, templates)
        if found:
            raise MachineError(shown, _place(shown, text, found))
        return _build(doc, os.path.realpath(shown), digest)
    finally:
        if collecting:
            gc.enable()


def _parse(shown: str, text: str) -> Any:
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    from runner.machine import yamlguard

    try:
        return yamlguard.load(text)
    except yamlguard.YamlShapeError as exc:
        raise MachineError(shown, [Problem(shown, exc.message, line=exc.line)]) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = Problem(
            shown,
            f"YAML syntax error: {exc.problem or exc.context}",
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
            hint="fix the YAML syntax (indentation, quotes, colons)",
        )
        raise MachineError(shown, [problem]) from exc
    except YAMLError as exc:
        raise MachineError(shown, [Problem(shown, f"YAML error: {exc}")]) from exc


# --- JSON Schema -------------------------------------------------------------------

_SNAKE_CASE = "^[a-z][a-z0-9_]*$"  # the schema's pattern of state, phase and step names

_validator: Any = None


def _schema_validator() -> Any:
    global _validator
    if _validator is None:
        from jsonschema import Draft202012Validator

        schema = json.loads(resources.schema_path("machine").read_text(encoding="utf-8"))
        _validator = Draft202012Validator(_inline_refs(schema, schema.get("$defs", {})))
    return _validator


@functools.cache
def _fast_check() -> Any:
    """runner.minischema's check of the same schema: a valid file (the common case) is
    confirmed several times faster than by jsonschema; tests compare the two."""
    from runner.minischema import compile_schema

    with open(resources.schema_file("machine"), encoding="utf-8") as schema:
        return compile_schema(json.load(schema))


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with every ``$ref: "#/$defs/NAME"`` replaced by that definition.

    The machine schema has no recursive definitions; validating against the inlined
    schema skips a reference lookup per `$ref` and value (a third of the time).
    """
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    result = {
        key: _inline_refs(value, defs)
        for key, value in node.items()
        if key not in ("$ref", "$defs")
    }
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        result = {**_inline_refs(defs[ref.removeprefix("#/$defs/")], defs), **result}
    elif ref is not None:
        result["$ref"] = ref
    return result


def _schema_problems(doc: Any) -> list[_Found]:
    if not isinstance(doc, dict):
        kind = "empty" if doc is None else type(doc).__name__
        return [
            _Found(
                (),
                f"the file must be a mapping of machine keys, not {kind}",
                hint="start from the shipped machine.yaml",
            )
        ]
    if _fast_check()(doc, "") is None:
        return []  # valid: the slower jsonschema pass is only needed to explain errors
    from jsonschema.exceptions import best_match

    found: list[_Found] = []
    for error in _schema_validator().iter_errors(doc):
        if "propertyNames" in error.schema_path:
            # the name of a key is wrong (a state name): point at that key
            bad = error.instance
            found.append(
                _Found(
                    (*error.absolute_path, bad),
                    f"invalid name {bad!r} under '{error.absolute_path[-1]}'",
                    hint=_name_hint(error),
                    at_key=True,
                )
            )
            continue
        if error.context:
            # descend into the oneOf branch that fits the value best (a string duration
            # is reported against the duration pattern, not against `type: number`)
            error = best_match([error])
        path = tuple(error.absolute_path)
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            extras = sorted(set(error.instance) - set(allowed))
            for key in extras:
                found.append(
                    _Found(
                        (*path, key),
                        f"unknown key '{key}'",
                        hint=f"allowed keys here: {', '.join(allowed)}",
                        at_key=True,
                    )
                )
            continue
        if error.validator == "required":
            found.append(_Found(path, error.message, hint="add the missing key", at_key=False))
            continue
        found.append(_Found(path, _friendly(error), value=error.instance, hint=_hint(error)))
    # one error per place: a bad duration gives one line, not one per oneOf branch
    unique: dict[tuple[tuple[str | int, ...], str], _Found] = {}
    for item in found:
        unique.setdefault((item.path, item.message), item)
    return list(unique.values())


def _hint(error: Any) -> str | None:
    if error.validator == "pattern":
        return _name_hint(error)
    if (
        error.validator == "type"
        and error.validator_value == "boolean"
        and str(error.instance) in YAML11_BOOLEANS
    ):
        return "YAML 1.2 reads yes/no/on/off as text: write true or false"
    return None


def _name_hint(error: Any) -> str | None:
    pattern = error.schema.get("pattern") if isinstance(error.schema, dict) else None
    if pattern == _SNAKE_CASE:
        return "use snake_case: lowercase letters, digits and '_', starting with a letter"
    if pattern is None or "ms|s|m|h" in pattern:
        return None
    return f"names here must match {pattern}"


def _friendly(error: Any) -> str:
    where = error.absolute_path[-1] if error.absolute_path else "the file"
    if error.validator == "pattern":
        if "ms|s|m|h" in error.validator_value:
            return f"{error.instance!r} is not a duration for '{where}' (use e.g. 30s, 15m, 1h)"
        if error.validator_value == _SNAKE_CASE:
            return f"{error.instance!r} is not a valid name for '{where}'"
        pattern = error.validator_value
        return f"{error.instance!r} is not a valid name for '{where}' (pattern {pattern})"
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return (
            f"'{where}' must be {expected}, not {type(error.instance).__name__} {error.instance!r}"
        )
    if (
        error.validator in ("oneOf", "anyOf")
        and error.context
        and all(e.validator == "type" and not e.relative_path for e in error.context)
    ):
        expected = " or ".join(str(e.validator_value) for e in error.context)
        kind = type(error.instance).__name__
        return f"'{where}' must be {expected}, not {kind} {error.instance!r}"
    if error.validator == "const":
        return f"'{where}' must be {error.validator_value!r}, not {error.instance!r}"
    return f"'{where}': {error.message}"


# --- semantic checks ---------------------------------------------------------------


def _sources(phase: dict[str, Any]) -> list[str]:
    value = phase["from"]
    return [value] if isinstance(value, str) else list(value)


def _misplaced_secrets(schema: Any, path: tuple[str, ...] = (), chain: bool = True) -> list[str]:
    """Where ``secret`` is set in the inputs schema but cannot be honoured: anywhere but
    a property reached through ``properties`` only (items, additionalProperties, allOf,
    $ref, ...), or set to something other than a boolean."""
    found: list[str] = []
    if isinstance(schema, dict):
        if "secret" in schema:
            value = schema["secret"]
            if not isinstance(value, bool):
                found.append("/".join(path) + " (true or false)")
            elif value and not (chain and path):
                found.append("/".join(path) or "(top)")
        for key, sub in schema.items():
            if key == "properties" and isinstance(sub, dict) and chain:
                for name, prop in sub.items():
                    found += _misplaced_secrets(prop, (*path, "properties", str(name)), True)
            elif key != "secret":
                found += _misplaced_secrets(sub, (*path, str(key)), False)
    elif isinstance(schema, list):
        for index, sub in enumerate(schema):
            found += _misplaced_secrets(sub, (*path, str(index)), False)
    return found


def _semantic_problems(
    doc: dict[str, Any], registry: PluginCatalog | None, templates: bool = True
) -> list[_Found]:
    found: list[_Found] = []
    states: dict[str, dict[str, Any]] = {k: (v or {}) for k, v in doc["states"].items()}
    phases: list[dict[str, Any]] = doc["phases"]
    declared = set(states)
    final = {name for name, s in states.items() if s.get("final")}

    for name in states:
        if name in YAML11_BOOLEANS or name == ANY:
            why = (
                "is reserved for `from: any`"
                if name == ANY
                else ("is read as a boolean by YAML 1.1 tools and editors")
            )
            found.append(
                _Found(
                    ("states", name),
                    f"state name '{name}' {why}",
                    hint=f"rename it, e.g. '{name}_state'",
                    at_key=True,
                )
            )

    if doc["initial"] not in declared:
        found.append(_undeclared(("initial",), doc["initial"], declared))
    elif doc["initial"] in final:
        found.append(
            _Found(
                ("initial",),
                f"initial state '{doc['initial']}' is final",
                hint="the initial state must have a phase out of it",
            )
        )

    inputs = doc.get("inputs")
    if inputs is not None:
        if not well_formed(inputs):  # else certainly valid: jsonschema is not needed
            from jsonschema import Draft202012Validator
            from jsonschema.exceptions import SchemaError

            try:
                Draft202012Validator.check_schema(inputs)
            except SchemaError as exc:
                found.append(
                    _Found(
                        ("inputs", *exc.path),
                        f"'inputs' is not a valid JSON Schema: {exc.message}",
                        hint="see https://json-schema.org",
                    )
                )
        for misplaced in _misplaced_secrets(inputs):
            found.append(
                _Found(
                    ("inputs", *misplaced.split(" ")[0].split("/")),
                    f"`secret` at inputs/{misplaced} cannot be honoured: a secret is a property "
                    "reached from the top through `properties` only",
                    hint="mark the property itself `secret: true` (not items, "
                    "additionalProperties, allOf or a $ref), or split the value into "
                    "named properties",
                )
            )

    used: set[str] = {doc["initial"]}
    via_of: dict[str, list[int]] = defaultdict(list)
    entered_by: dict[str, list[tuple[int, str]]] = defaultdict(list)  # state -> (phase, role)
    explicit_from: dict[str, list[int]] = defaultdict(list)
    phase_names: dict[str, int] = {}
    step_checks = _StepChecks(registry, templates)
    for i, phase in enumerate(phases):
        base = ("phases", i)
        if phase["name"] in phase_names:
            found.append(
                _Found(
                    (*base, "name"),
                    f"phase name '{phase['name']}' is used twice "
                    f"(also phases[{phase_names[phase['name']]}])",
                    hint="give every phase its own name",
                )
            )
        phase_names.setdefault(phase["name"], i)
        if phase["from"] == ANY:
            pass
        else:
            sources = _sources(phase)
            for j, src in enumerate(sources):
                where = base + (("from", j) if isinstance(phase["from"], list) else ("from",))
                if src == ANY:
                    found.append(
                        _Found(
                            where,
                            "'any' must be the whole `from` value, not a list item",
                            hint="write `from: any`",
                        )
                    )
                elif src not in declared:
                    found.append(_undeclared(where, src, declared))
                elif src in final:
                    found.append(
                        _Found(
                            where,
                            f"final state '{src}' cannot have an outgoing phase "
                            f"('{phase['name']}')",
                            hint="remove `final: true` or take it out of `from`",
                        )
                    )
                used.add(src)
                explicit_from[src].append(i)
        for role in ("via", "to", "failed"):
            target = phase[role]
            if target not in declared:
                found.append(_undeclared((*base, role), target, declared))
            used.add(target)
            entered_by[target].append((i, role))
        if (
            phase["via"] == phase["to"]
            or phase["via"] == phase["failed"]
            or (phase["to"] == phase["failed"])
        ):
            found.append(
                _Found(
                    base,
                    f"phase '{phase['name']}' must use three different states "
                    "for via, to and failed",
                    hint="declare separate states",
                )
            )
        via_of[phase["via"]].append(i)
        for role in ("via", "failed"):
            if phase[role] in final:
                found.append(
                    _Found(
                        (*base, role),
                        f"the {role} state '{phase[role]}' of phase '{phase['name']}' is final",
                        hint="remove `final: true` from it",
                    )
                )
        found.extend(_step_problems(phase, base, step_checks))
    found.extend(_check_problems(doc, declared, step_checks))

    for name in states:
        if name not in used and name not in YAML11_BOOLEANS:
            found.append(
                _Found(
                    ("states", name),
                    f"state '{name}' is declared but never used",
                    hint="use it in a phase or remove it",
                    at_key=True,
                )
            )

    # a via state belongs to exactly one phase
    for state, owners in via_of.items():
        if len(owners) > 1:
            names = ", ".join(phases[i]["name"] for i in owners)
            found.append(
                _Found(
                    ("phases", owners[1], "via"),
                    f"via state '{state}' is shared by phases {names}",
                    hint="each phase needs its own intermediate state",
                )
            )
        owner = owners[0]
        for i, role in entered_by[state]:
            if i != owner and role != "via":
                found.append(
                    _Found(
                        ("phases", i, role),
                        f"'{state}' is the via state of phase "
                        f"'{phases[owner]['name']}' and cannot be the {role} state of "
                        f"phase '{phases[i]['name']}'",
                        hint="use another state",
                    )
                )
        for i in explicit_from.get(state, []):
            found.append(
                _Found(
                    ("phases", i, "from"),
                    f"'{state}' is the via state of phase "
                    f"'{phases[owner]['name']}'; phase '{phases[i]['name']}' cannot "
                    "start from it",
                    hint="only `from: any` covers intermediate states",
                )
            )

    # a failed state is entered only by its phase
    for i, phase in enumerate(phases):
        failed = phase["failed"]
        for j, role in entered_by[failed]:
            if j != i:
                found.append(
                    _Found(
                        ("phases", j, role),
                        f"'{failed}' is the failed state of phase "
                        f"'{phase['name']}' and cannot be entered by phase "
                        f"'{phases[j]['name']}'",
                        hint="give each phase its own failed state",
                    )
                )

    if found:
        return found

    resolved = _resolve_sources(doc)
    # from each state at most one advancing phase
    advancing: dict[str, list[int]] = defaultdict(list)
    for i, phase in enumerate(phases):
        if phase.get("advance", True):
            for src in resolved[i]:
                advancing[src].append(i)
    for state, owners in sorted(advancing.items()):
        if len(owners) > 1:
            names = ", ".join(phases[i]["name"] for i in owners)
            found.append(
                _Found(
                    ("phases", owners[1], "from"),
                    f"state '{state}' has more than one "
                    f"advancing phase ({names}), so `runner advance` would be ambiguous",
                    hint="set `advance: false` on all but one of them",
                )
            )

    # every state reachable from the initial state
    edges: dict[str, set[str]] = defaultdict(set)
    for i, phase in enumerate(phases):
        for src in resolved[i]:
            edges[src].add(phase["via"])
        edges[phase["via"]].update((phase["to"], phase["failed"]))
    seen = {doc["initial"]}
    queue = deque([doc["initial"]])
    while queue:
        for nxt in edges[queue.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    for name in states:
        if name not in seen:
            found.append(
                _Found(
                    ("states", name),
                    f"state '{name}' cannot be reached from the initial state '{doc['initial']}'",
                    hint="add a phase that leads to it, or remove it",
                    at_key=True,
                )
            )
    found.extend(_trap_states(doc, states, final, edges, seen))

    if templates:
        found.extend(_recovery_problems(states))
    return found


def _recovery_problems(states: dict[str, dict[str, Any]]) -> list[_Found]:
    from runner.machine.templating import check_syntax  # Jinja2: only when checked

    found = []
    for name, spec in states.items():
        recovery = spec.get("recovery")
        if isinstance(recovery, str):
            error = check_syntax(recovery)
            if error:
                found.append(
                    _Found(
                        ("states", name, "recovery"),
                        f"recovery text: {error}",
                        hint="fix the Jinja2 template",
                    )
                )
    return found


def _trap_states(
    doc: dict[str, Any],
    states: dict[str, dict[str, Any]],
    final: set[str],
    edges: dict[str, set[str]],
    reachable: set[str],
) -> list[_Found]:
    """The non-final states with no way to a final state (when the machine has one): an
    environment there could never be finished. One walk back from the final states over
    the phases' edges and the resume edges (failed → via), so linear in the edges."""
    if not final:
        return []
    back: dict[str, list[str]] = defaultdict(list)
    for source, targets in edges.items():
        for target in targets:
            back[target].append(source)
    for phase in doc["phases"]:
        back[phase["via"]].append(phase["failed"])  # `runner resume` from the failed state
    ending = set(final)
    queue = deque(final)
    while queue:
        for previous in back[queue.popleft()]:
            if previous not in ending:
                ending.add(previous)
                queue.append(previous)
    names = ", ".join(sorted(final))
    return [
        _Found(
            ("states", name),
            f"state '{name}' is a trap: no phase leads from it to a final state ({names}), "
            "so an environment there could never be finished",
            hint=f"add a phase from '{name}' (or `from: any`) that leads towards {names}, "
            "or mark it `final: true`",
            at_key=True,
        )
        for name in states
        if name not in ending and name in reachable  # an unreachable one is reported so
    ]


def _resolve_sources(doc: dict[str, Any]) -> list[list[str]]:
    states = doc["states"]
    non_final = [name for name, s in states.items() if not (s or {}).get("final")]
    result = []
    for phase in doc["phases"]:
        if phase["from"] == ANY:
            result.append([s for s in non_final if s != phase["via"]])
        else:
            result.append(_sources(phase))
    return result


class _StepChecks:
    """The checks of the steps (and checks) of one machine, keeping what a large
    machine repeats: the verdict of each template text and of each plugin name."""

    __slots__ = ("_plugins", "_syntax", "registry", "templates")

    def __init__(self, registry: PluginCatalog | None, templates: bool = True) -> None:
        self.registry = registry
        self.templates = templates  # without, the Jinja2 syntax is not checked
        self._syntax: dict[tuple[str, bool], str | None] = {}
        self._plugins: dict[str, tuple[str, str] | None] = {}

    def syntax(self, source: str, *, expression: bool = False) -> str | None:
        """What is wrong with the template ``source`` (a `with` text; with
        ``expression``, a `when`), if anything."""
        key = (source, expression)
        if key not in self._syntax:
            from runner.machine.templating import check_syntax  # Jinja2: when checked

            self._syntax[key] = check_syntax(source, expression=expression)
        return self._syntax[key]

    def plugin(self, registry: PluginCatalog, uses: str) -> tuple[str, str] | None:
        """``("broken", why)`` or ``("unknown", "")`` for a plugin name, else None."""
        if uses not in self._plugins:
            verdict: tuple[str, str] | None = None
            if registry.get(uses) is None:
                broken = getattr(registry, "load_problem", None)
                problem = broken(uses) if broken is not None else None
                verdict = ("broken", problem) if problem else ("unknown", "")
            self._plugins[uses] = verdict
        return self._plugins[uses]


def _step_problems(
    phase: dict[str, Any], base: tuple[str | int, ...], checks: _StepChecks
) -> list[_Found]:
    return _steps_problems(
        phase["steps"], (*base, "steps"), f"phase '{phase['name']}'", "a phase", checks
    )


def _check_problems(doc: dict[str, Any], declared: set[str], checks: _StepChecks) -> list[_Found]:
    """The checks: steps like a phase's (plugin, `with`, templates, unique names), and
    every state of their `in` declared."""
    defined = doc.get("checks") or []
    found = _steps_problems(defined, ("checks",), "the checks", "the checks", checks, "check")
    for k, check in enumerate(defined):
        for j, state in enumerate(check["in"]):
            if state not in declared:
                found.append(_undeclared(("checks", k, "in", j), state, declared))
    return found


def _steps_problems(
    steps: list[dict[str, Any]],
    base: tuple[str | int, ...],
    owner: str,
    unique_in: str,
    checks: _StepChecks,
    noun: str = "step",
) -> list[_Found]:
    found: list[_Found] = []
    seen: dict[str, int] = {}
    registry = checks.registry
    for k, step in enumerate(steps):
        name = step["name"]
        if name in seen:
            found.append(
                _Found(
                    (*base, k, "name"),
                    f"{noun} name '{name}' appears twice in {owner}",
                    hint=f"{noun} names must be unique in {unique_in}",
                )
            )
        else:
            seen[name] = k
        for where, value in _durations(step):
            try:
                parse_duration(value)
            except (TypeError, ValueError) as exc:
                found.append(
                    _Found(
                        (*base, k, *where),
                        f"`{where[-1]}` of {noun} '{name}': {exc}",
                    )
                )
        when = step.get("when")
        if checks.templates and isinstance(when, str):
            error = checks.syntax(when, expression=True)
            if error:
                found.append(
                    _Found(
                        (*base, k, "when"),
                        f"`when` of {noun} '{name}': {error}",
                        hint="write a Jinja2 expression such as inputs.provider != 'local'",
                    )
                )
        params = step.get("with", {})
        # the templated strings of each parameter, found in one walk
        texts = {key: template_strings(value) for key, value in params.items()}
        for strings in texts.values() if checks.templates else ():
            for text in strings:
                error = checks.syntax(text)
                if error:
                    found.append(
                        _Found(
                            (*base, k, "with"),
                            f"`with` of {noun} '{name}': {error} in {text!r}",
                            hint="fix the Jinja2 template",
                        )
                    )
        if registry is not None:
            found.extend(_plugin_problems(step, (*base, k), registry, checks, texts, noun))
    return found


def _durations(step: dict[str, Any]) -> list[tuple[tuple[str, ...], Any]]:
    """The durations of a step (its timeout and retry pauses), with their paths."""
    found: list[tuple[tuple[str, ...], Any]] = []
    if "timeout" in step:
        found.append((("timeout",), step["timeout"]))
    retry = step.get("retry")
    if isinstance(retry, dict):
        found += [(("retry", key), retry[key]) for key in ("delay", "max_delay") if key in retry]
    return found


def _plugin_problems(
    step: dict[str, Any],
    where: tuple[str | int, ...],
    registry: PluginCatalog,
    checks: _StepChecks,
    texts: dict[str, list[str]],
    noun: str,
) -> list[_Found]:
    uses = step["uses"]
    verdict = checks.plugin(registry, uses)
    if verdict is not None and verdict[0] == "broken":
        return [
            _Found(
                (*where, "uses"),
                f"{noun} '{step['name']}' uses plugin '{uses}', which is broken: {verdict[1]}",
                hint="reinstall the package that provides it, or uninstall it",
            )
        ]
    if verdict is not None:
        return [
            _Found(
                (*where, "uses"),
                f"{noun} '{step['name']}' uses unknown plugin '{uses}'"
                + did_you_mean(str(uses), registry.names()),
                hint=f"installed plugins: {', '.join(registry.names()) or 'none'}",
            )
        ]
    params = step.get("with", {})
    # literal values are checked now; templated ones after rendering, when the step runs
    literal = {k: v for k, v in params.items() if not texts[k]}
    templated = frozenset(k for k, strings in texts.items() if strings)
    found = []
    for path, message in registry.param_errors(uses, literal, templated):
        if path or "required" not in message or not _missing_is_templated(message, params):
            found.append(
                _Found(
                    (*where, "with", *path),
                    f"`with` of {noun} '{step['name']}' ({uses}): {message}",
                    hint=f"see the '{uses}' plugin's parameters",
                )
            )
    return found


def _missing_is_templated(message: str, params: dict[str, Any]) -> bool:
    return any(f"'{key}'" in message for key in params)


def _undeclared(path: tuple[str | int, ...], name: Any, declared: set[str]) -> _Found:
    import difflib

    close = difflib.get_close_matches(str(name), sorted(declared), n=1)
    hint = f"did you mean '{close[0]}'?" if close else "declare it under `states:`"
    return _Found(path, f"state '{name}' is not declared", hint=hint, value=name)


# --- positions ---------------------------------------------------------------------


def _place(shown: str, text: str, found: list[_Found]) -> list[Problem]:
    from ruamel.yaml import YAML

    try:
        tree = YAML(typ="rt").load(text)
    except Exception:  # positions are a courtesy; never fail the report over them
        tree = None
    problems = []
    for item in found:
        line, column = _position(tree, item.path, item.at_key)
        problems.append(
            Problem(
                shown,
                item.message,
                line=line,
                column=column,
                path=item.path,
                value=item.value,
                hint=item.hint,
            )
        )
    return sorted(problems, key=lambda p: (p.line or 0, p.column or 0))


def _position(
    tree: Any, path: tuple[str | int, ...], at_key: bool
) -> tuple[int | None, int | None]:
    node = tree
    line: int | None = 0
    column: int | None = 0
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        lc = getattr(node, "lc", None)
        try:
            if isinstance(node, dict) and lc is not None and part in node:
                # an empty value has no position of its own: use its key's
                pos = lc.key(part) if (last and (at_key or node[part] is None)) else lc.value(part)
                line, column = pos
                node = node[part]
            elif (
                isinstance(node, list)
                and lc is not None
                and isinstance(part, int)
                and part < len(node)
            ):
                line, column = lc.item(part)
                node = node[part]
            else:
                break
        except (KeyError, TypeError, AttributeError):
            break
    if line is None:
        return None, None
    top = getattr(tree, "lc", None)
    if not path and top is not None and top.line is not None:
        return top.line + 1, (top.col or 0) + 1
    return (line + 1 if line is not None else None), (column + 1 if column is not None else None)


# --- building ----------------------------------------------------------------------


def _build(doc: dict[str, Any], file: str, digest: str) -> MachineDef:
    states = {}
    for name, spec in doc["states"].items():
        spec = spec or {}
        states[name] = StateDef(
            name=name,
            description=spec.get("description", ""),
            recovery=spec.get("recovery"),
            final=bool(spec.get("final", False)),
        )
    resolved = _resolve_sources(doc)
    retries: dict[Any, Retry] = {}  # a machine repeats its retries: one (frozen) of each
    phases = []
    for i, phase in enumerate(doc["phases"]):
        steps = tuple(StepDef(**_step_fields(step, retries)) for step in phase["steps"])
        phases.append(
            PhaseDef(
                name=phase["name"],
                sources=tuple(resolved[i]),
                via=phase["via"],
                to=phase["to"],
                failed=phase["failed"],
                advance=bool(phase.get("advance", True)),
                steps=steps,
                confirm=bool(phase.get("confirm", False)),
            )
        )
    return MachineDef(
        name=doc["name"],
        description=doc.get("description", ""),
        initial=doc["initial"],
        inputs_schema=doc.get("inputs") or {"type": "object"},
        states=states,
        phases=tuple(phases),
        path=str(file),
        digest=digest,
        checks=tuple(
            CheckDef(**_step_fields(check, retries), states=tuple(check["in"]))
            for check in doc.get("checks") or ()
        ),
    )


#: :func:`parse_duration` of each duration text or number met (``typed``: never 1 for True).
_duration = functools.lru_cache(maxsize=1024, typed=True)(parse_duration)


def _step_fields(step: dict[str, Any], retries: dict[Any, Retry]) -> dict[str, Any]:
    """The fields of a :class:`StepDef` (or a check's) from its validated YAML; the
    ``Retry`` is taken from ``retries`` when one alike was built."""
    spec = step.get("retry", {})
    key = tuple(spec.items())
    retry = retries.get(key)
    if retry is None:
        jitter = spec.get("jitter", 0)
        retry = retries[key] = Retry(
            attempts=int(spec.get("attempts", 1)),
            delay_s=_duration(spec.get("delay", 0)),
            backoff=float(spec.get("backoff", 1)),
            max_delay_s=_duration(spec["max_delay"]) if "max_delay" in spec else None,
            jitter=1.0 if jitter == "full" else float(jitter),
        )
    return {
        "name": step["name"],
        "uses": step["uses"],
        "with_": dict(step.get("with") or {}),
        "when": step.get("when"),
        "timeout_s": _duration(step["timeout"]) if "timeout" in step else None,
        "retry": retry,
        "outputs": dict(step.get("outputs") or {}),
    }
