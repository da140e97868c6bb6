"""Environment inputs: read from a config file and `--set KEY=VALUE`, defaults from the
machine's `inputs` schema applied, then validated against it.

Secret inputs (a property with ``secret: true`` in the schema) never hold a value:
they name where the value lives, ``{env: NAME}`` or ``{file: PATH}``, and the value is
read only when a step needs it (``secret('path.to.input')`` in a template).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from runner.errors import InputsError


def load_config_file(path: Path) -> dict[str, Any]:
    """Inputs from a YAML or JSON file (a mapping)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputsError(
            f"cannot read config file {path}: {exc.strerror}", hint="check the --config path"
        ) from exc
    except UnicodeDecodeError as exc:
        raise InputsError(f"config file {path} is not UTF-8 text") from exc
    from runner.yamlguard import expansion_problem, nesting_problem

    deep = nesting_problem(text)
    if deep is not None:
        raise InputsError(f"{path}:{deep[0]}: config file is {deep[1]}")
    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputsError(
            f"{where}: config file is not valid YAML/JSON: {problem}",
            hint="fix the syntax of the config file",
        ) from exc
    if data is None:
        return {}
    problem = expansion_problem(data) if "&" in text else None
    if problem is not None:
        raise InputsError(f"{path}: config file: {problem}")
    if not isinstance(data, dict):
        raise InputsError(
            f"{path}: config file must be a mapping of inputs, not {type(data).__name__}",
            hint="write `key: value` lines",
        )
    return data


def _scalar(text: str) -> Any:
    """A `--set` value: YAML scalar rules (2222 → int, true → bool), else the text."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    from runner.yamlguard import expansion_problem, nesting_problem

    if text == "":
        return ""
    if nesting_problem(text) is not None:
        raise InputsError(f"--set value {text[:40]!r}... is too deeply nested")
    try:
        value = YAML(typ="safe").load(text)
    except YAMLError:
        return text
    if isinstance(value, dict | list) and not text.lstrip().startswith(("{", "[")):
        return text
    if "&" in text and expansion_problem(value) is not None:
        raise InputsError(f"--set value {text[:40]!r}: {expansion_problem(value)}")
    return value


def apply_sets(data: dict[str, Any], assignments: Iterable[str]) -> dict[str, Any]:
    """Apply `--set a.b=c` assignments to a copy of ``data``."""
    result = copy.deepcopy(data)
    for item in assignments:
        key, sep, raw = item.partition("=")
        parts = key.split(".")
        if not sep or not key or any(not p for p in parts):
            raise InputsError(
                f"--set {item!r} is not KEY=VALUE",
                hint="write --set ssh.port=2222 (dotted keys for nested inputs)",
            )
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InputsError(
                    f"--set {item!r}: input '{'.'.join(parts[: depth + 1])}' is not "
                    "a mapping, so it has no keys",
                    hint="check the key",
                )
            node = child
        node[parts[-1]] = _scalar(raw)
    return result


def apply_defaults(schema: Mapping[str, Any], data: Any) -> Any:
    """Fill in ``default`` values of object properties, recursively."""
    if not isinstance(data, dict) or not isinstance(schema, Mapping):
        return data
    props = schema.get("properties")
    if not isinstance(props, Mapping):
        return data
    for key, sub in props.items():
        if not isinstance(sub, Mapping):
            continue
        if key not in data and "default" in sub:
            data[key] = copy.deepcopy(sub["default"])
        if key in data:
            data[key] = apply_defaults(sub, data[key])
    return data


def _path_text(path: Iterable[Any]) -> str:
    parts = [str(p) for p in path]
    return "inputs" + ("." + ".".join(parts) if parts else "")


def validate(schema: Mapping[str, Any], data: dict[str, Any]) -> None:
    from jsonschema import Draft202012Validator

    messages = []
    for err in sorted(
        Draft202012Validator(schema).iter_errors(data),
        key=lambda e: [str(p) for p in e.absolute_path],
    ):
        where = _path_text(err.absolute_path)
        if err.validator == "additionalProperties":
            known = sorted(err.schema.get("properties") or {})
            extras = sorted(set(err.instance) - set(known))
            for extra in extras:
                messages.append(
                    f"{where}: unknown input '{extra}'"
                    + (f" (known: {', '.join(known)})" if known else "")
                )
            continue
        messages.append(f"{where}: {err.message}")
    messages.extend(_secret_problems(schema, data))
    if messages:
        raise InputsError(
            "the inputs do not match the machine's inputs schema:\n  " + "\n  ".join(messages),
            hint="fix the values with --set KEY=VALUE or in the --config file",
        )


def secret_paths(
    schema: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    """Dotted paths of the inputs marked ``secret: true``."""
    props = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(props, Mapping):
        return
    for key, sub in props.items():
        if not isinstance(sub, Mapping):
            continue
        if sub.get("secret") is True:
            yield (*prefix, key)
        else:
            yield from secret_paths(sub, (*prefix, key))


def _get(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(data, Mapping) or part not in data:
            return None
        data = data[part]
    return data


def _secret_problems(schema: Mapping[str, Any], data: dict[str, Any]) -> list[str]:
    problems = []
    for path in secret_paths(schema):
        value = _get(data, path)
        if value is None:
            continue
        if not (
            isinstance(value, Mapping)
            and len(value) == 1
            and set(value) <= {"env", "file"}
            and isinstance(next(iter(value.values())), str)
        ):
            problems.append(
                f"{_path_text(path)}: a secret input names where its value is, "
                "{env: VARIABLE} or {file: PATH}, and never holds the value"
            )
    return problems


def build_inputs(
    schema: Mapping[str, Any], config: Path | None, sets: Iterable[str]
) -> dict[str, Any]:
    data = load_config_file(config) if config is not None else {}
    data = apply_sets(data, sets)
    filled: dict[str, Any] = apply_defaults(schema, data)
    validate(schema, filled)
    return filled


class SecretResolver:
    """Reads secret values when a step needs them and remembers them for masking."""

    def __init__(self, schema: Mapping[str, Any], inputs: Mapping[str, Any], workdir: Path) -> None:
        self._paths = {".".join(p) for p in secret_paths(schema)}
        self._inputs = inputs
        self._workdir = workdir
        self.values: dict[str, str] = {}
        self._needles: list[str] = []

    def __call__(self, dotted: str) -> str:
        if dotted not in self._paths:
            raise InputsError(
                f"secret('{dotted}'): '{dotted}' is not an input marked secret: true",
                hint="mark it `secret: true` in the machine's inputs schema",
            )
        ref = _get(self._inputs, tuple(dotted.split(".")))
        if not isinstance(ref, Mapping):
            raise InputsError(
                f"secret('{dotted}'): the environment gives no reference for it",
                hint=f"create it with --set {dotted}.env=VARIABLE",
            )
        if "env" in ref:
            value = os.environ.get(str(ref["env"]))
            if value is None:
                raise InputsError(
                    f"secret input '{dotted}' is read from the environment variable "
                    f"{ref['env']}, which is not set",
                    hint=f"export {ref['env']}=... before running the command",
                )
        else:
            path = Path(str(ref["file"]))
            path = path if path.is_absolute() else self._workdir / path
            try:
                value = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise InputsError(
                    f"secret input '{dotted}' is read from {path}: {exc.strerror}",
                    hint="create the file or fix the path",
                ) from exc
        if value:
            self.values[dotted] = value
            self._needles = sorted(
                {n for v in self.values.values() for n in _secret_pieces(v)}, key=len, reverse=True
            )
        return value

    def mask(self, text: str) -> str:
        """``text`` with every secret read so far, and every piece of one, replaced by
        ``***``."""
        for needle in self._needles:
            if needle in text:
                text = text.replace(needle, "***")
        return text


_MIN_PIECE = 6
"""Shorter pieces of a secret are not masked on their own (they would hide common words)."""


def _secret_pieces(value: str) -> set[str]:
    """What of ``value`` must never be shown: the value, each of its lines (tools print a
    key file line by line) and each run between spaces, quotes and backslashes (a quoted
    or escaped copy of the value shows those runs unchanged)."""
    import re

    pieces = {value}
    pieces |= {line.strip() for line in value.splitlines()}
    pieces |= set(re.split(r"[\s'\"\\]+", value))
    return {p for p in pieces if p == value or len(p) >= _MIN_PIECE}
