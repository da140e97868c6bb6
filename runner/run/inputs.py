"""Environment inputs: read from a config file and `--set KEY=VALUE`, defaults from the
machine's `inputs` schema applied, then validated against it.

Secret inputs (a property with ``secret: true`` in the schema) never hold a value:
they name where the value lives, ``{env: NAME}`` or ``{file: PATH}``, and the value is
read only when a step needs it (``secret('path.to.input')`` in a template).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from runner.errors import InvalidInputsError
from runner.struct import copied

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def load_config_file(path: Path) -> dict[str, Any]:
    """Inputs from a YAML or JSON file (a mapping)."""
    from ruamel.yaml.error import YAMLError

    from runner.files import TooLarge, read_limited

    try:
        text = read_limited(path, "config").decode("utf-8")
    except TooLarge as exc:
        raise InvalidInputsError(
            f"config file {path} {exc}", hint="inputs are small: pass a file of inputs only"
        ) from None
    except OSError as exc:
        raise InvalidInputsError(
            f"cannot read config file {path}: {exc.strerror}", hint="check the --config path"
        ) from exc
    except UnicodeDecodeError as exc:
        raise InvalidInputsError(f"config file {path} is not UTF-8 text") from exc
    from runner.machine import yamlguard

    try:
        data = yamlguard.load(text)
    except yamlguard.YamlShapeError as exc:
        where = f"{path}:{exc.line}" if exc.line else str(path)
        raise InvalidInputsError(f"{where}: config file: {exc.message}") from None
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidInputsError(
            f"{where}: config file is not valid YAML/JSON: {problem}",
            hint="fix the syntax of the config file",
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInputsError(
            f"{path}: config file must be a mapping of inputs, not {type(data).__name__}",
            hint="write `key: value` lines",
        )
    return data


def _scalar(text: str) -> Any:
    """A `--set` value: YAML scalar rules (2222 → int, true → bool), else the text."""
    from ruamel.yaml.error import YAMLError

    from runner.machine import yamlguard

    if text == "":
        return ""
    try:
        value = yamlguard.load(text)
    except yamlguard.YamlShapeError as exc:
        raise InvalidInputsError(f"--set value {text[:40]!r}: {exc.message}") from None
    except YAMLError:
        return text
    if isinstance(value, dict | list) and not text.lstrip().startswith(("{", "[")):
        return text
    return value


def apply_sets(data: dict[str, Any], assignments: Iterable[str]) -> dict[str, Any]:
    """Apply `--set a.b=c` assignments to a copy of ``data``."""
    result = copied(data)
    for item in assignments:
        key, sep, raw = item.partition("=")
        parts = key.split(".")
        if not sep or not key or any(not p for p in parts):
            raise InvalidInputsError(
                f"--set {item!r} is not KEY=VALUE",
                hint="write --set ssh.port=2222 (dotted keys for nested inputs)",
            )
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InvalidInputsError(
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
            data[key] = copied(sub["default"])
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
    messages.extend(_not_finite(data))
    messages.extend(_secret_problems(schema, data))
    if messages:
        raise InvalidInputsError(
            "the inputs do not match the machine's inputs schema:\n  " + "\n  ".join(messages),
            hint="fix the values with --set KEY=VALUE or in the --config file",
        )


def _not_finite(data: Any, path: tuple[str, ...] = ()) -> Iterator[str]:
    """NaN and the infinities: JSON has no such numbers, so no input may hold one."""
    if isinstance(data, float) and not math.isfinite(data):
        yield f"{_path_text(path) or '(inputs)'}: {data!r} is not a number JSON can hold"
    elif isinstance(data, Mapping):
        for key, value in data.items():
            yield from _not_finite(value, (*path, str(key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _not_finite(value, (*path, str(index)))


def marked_properties(
    schema: Mapping[str, Any], keyword: str, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Mapping[str, Any]]]:
    """(path, sub-schema) of each property reached through ``properties`` whose schema
    has ``keyword`` (a truthy value); the walk does not go below a marked property."""
    props = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(props, Mapping):
        return
    for key, sub in props.items():
        if not isinstance(sub, Mapping):
            continue
        if sub.get(keyword):
            yield (*prefix, str(key)), sub
        else:
            yield from marked_properties(sub, keyword, (*prefix, str(key)))


def secret_paths(schema: Mapping[str, Any]) -> Iterator[tuple[str, ...]]:
    """Dotted paths of the inputs marked ``secret: true``."""
    for path, sub in marked_properties(schema, "secret"):
        if sub.get("secret") is True:
            yield path


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


#: ``secret('a.b')`` / ``secret_file("a.b")`` in a template: the input it reads.
_SECRET_CALL = r"""\bsecret(?:_file)?\s*\(\s*(['"])([^'"]+)\1\s*\)"""
#: ``secret(`` or ``secret_file(`` called any other way (a computed name): any secret.
_SECRET_NAME = r"\bsecret(?:_file)?\s*\("
#: The template files of one source read to find the secrets it uses, at most.
_SCAN_FILES = 1000
_SCAN_BYTES = 1 << 20


def secrets_in(texts: Iterable[str]) -> set[str] | None:
    """The secret inputs ``texts`` (templates) read with ``secret('...')`` or
    ``secret_file('...')``; None when one reads a secret whose name is computed (it may
    be any of them)."""
    import re

    found: set[str] = set()
    for text in texts:
        if "secret" not in text:
            continue
        # only what Jinja evaluates: `{{ ... }}` and `{% ... %}`, not the text around
        code = " ".join(re.findall(r"\{\{.*?\}\}|\{%.*?%\}", text, re.DOTALL))
        found.update(match.group(2) for match in re.finditer(_SECRET_CALL, code))
        if len(re.findall(_SECRET_NAME, code)) > len(re.findall(_SECRET_CALL, code)):
            return None
    return found


def template_texts(source: Path) -> Iterator[str]:
    """The ``*.j2`` files of the template source ``source`` (a file or a folder), for
    :func:`secrets_in`; what cannot be read is left out."""
    files = [source] if source.is_file() else sorted(source.rglob("*.j2"))[:_SCAN_FILES]
    for path in files:
        if path.suffix != ".j2" or path.is_symlink():
            continue
        try:
            with path.open("rb") as handle:
                yield handle.read(_SCAN_BYTES).decode("utf-8", errors="replace")
        except OSError:
            continue


def strings_in(value: Any) -> Iterator[str]:
    """Every string in ``value`` (a step's `with`, say), recursively."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings_in(item)


class SecretResolver:
    """Reads secret values when a step needs them and remembers them for masking."""

    def __init__(self, schema: Mapping[str, Any], inputs: Mapping[str, Any], workdir: Path) -> None:
        self._paths = {".".join(p) for p in secret_paths(schema)}
        self._inputs = inputs
        self._workdir = workdir
        self.values: dict[str, str] = {}
        self._needles: list[str] = []
        self._wholes: list[str] = []
        self._files: Path | None = None

    def references(self) -> dict[str, Mapping[str, Any]]:
        """Each secret input the environment gives, and where its value is."""
        found = {}
        for dotted in sorted(self._paths):
            ref = _get(self._inputs, tuple(dotted.split(".")))
            if isinstance(ref, Mapping):
                found[dotted] = ref
        return found

    def env_names(self) -> frozenset[str]:
        """The environment variables secret inputs are read from: programs a step runs
        do not inherit them (a step that needs one passes it on purpose)."""
        return frozenset(str(ref["env"]) for ref in self.references().values() if "env" in ref)

    def preload(self) -> list[str]:
        """Read every secret the environment names, so that it is masked from the start
        of a phase whatever prints it (a program echoing an inherited variable, say);
        returns the problems of those that cannot be read (a step that uses one fails
        with that message)."""
        problems = []
        for dotted in self.references():
            try:
                self(dotted)
            except InvalidInputsError as exc:
                problems.append(exc.message)
        return problems

    def unreadable(self, names: set[str] | None = None) -> list[str]:
        """The problems of the secrets the environment names (of ``names`` only, when
        given) that cannot be read now: one line each, naming the input and where it
        is read from."""
        problems = []
        for dotted in self.references():
            if names is not None and dotted not in names:
                continue
            try:
                self(dotted)
            except InvalidInputsError as exc:
                problems.append(exc.message)
        return problems

    def secret_file(self, dotted: str) -> str:
        """The path of a file holding the secret ``dotted`` (mode 0600, in a folder of
        mode 0700 removed when the phase ends): the way to hand a secret to a program
        without putting it in its argv, which every local user can read."""
        import tempfile

        value = self(dotted)
        if self._files is None:
            shm = Path("/dev/shm")
            base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
            self._files = Path(tempfile.mkdtemp(prefix="runner-secrets-", dir=base))
        path = self._files / dotted
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(value)
        return str(path)

    def close(self) -> None:
        """Remove the files :meth:`secret_file` wrote."""
        if self._files is not None:
            import shutil

            shutil.rmtree(self._files, ignore_errors=True)
            self._files = None

    def __call__(self, dotted: str) -> str:
        if dotted not in self._paths:
            raise InvalidInputsError(
                f"secret('{dotted}'): '{dotted}' is not an input marked secret: true",
                hint="mark it `secret: true` in the machine's inputs schema",
            )
        ref = _get(self._inputs, tuple(dotted.split(".")))
        if not isinstance(ref, Mapping):
            raise InvalidInputsError(
                f"secret('{dotted}'): the environment gives no reference for it",
                hint=f"create it with --set {dotted}.env=VARIABLE",
            )
        if "env" in ref:
            value = os.environ.get(str(ref["env"]))
            if value is None:
                raise InvalidInputsError(
                    f"secret input '{dotted}' is read from the environment variable "
                    f"{ref['env']}, which is not set",
                    hint=f"export {ref['env']}=... before running the command",
                )
        else:
            path = Path(str(ref["file"]))
            path = path if path.is_absolute() else self._workdir / path
            from runner.files import TooLarge, read_limited

            try:
                value = read_limited(path, "secret").decode("utf-8", errors="replace").strip()
            except TooLarge as exc:
                raise InvalidInputsError(
                    f"secret input '{dotted}' is read from {path}, which {exc}",
                    hint="point the secret at a file holding only the secret",
                ) from None
            except OSError as exc:
                raise InvalidInputsError(
                    f"secret input '{dotted}' is read from {path}: {exc.strerror}",
                    hint="create the file or fix the path",
                ) from exc
        if value:
            self.values[dotted] = value
            self._wholes = _longest_first(w for v in self.values.values() for w in _whole_forms(v))
            self._needles = _longest_first(
                n for v in self.values.values() for n in _secret_pieces(v) | _whole_forms(v)
            )
        return value

    def mask(self, text: str) -> str:
        """``text`` with every secret read so far, its quoted and escaped forms, and each
        piece of it (line, word) replaced by ``***``: for what people read (run logs,
        the progress display, traces, logs)."""
        return _replace_all(text, self._needles)

    def mask_value(self, text: str) -> str:
        """``text`` with every secret read so far, whole or quoted/escaped, replaced by
        ``***``, and nothing else: for program output a step parses, which masking a
        common word of a secret would corrupt."""
        return _replace_all(text, self._wholes)


def _replace_all(text: str, needles: list[str]) -> str:
    for needle in needles:
        if needle in text:
            text = text.replace(needle, "***")
    return text


def _longest_first(needles: Iterable[str]) -> list[str]:
    return sorted({n for n in needles if n}, key=len, reverse=True)


_MIN_PIECE = 6
"""Shorter pieces of a secret are not masked on their own (they would hide common words)."""


def _whole_forms(value: str) -> set[str]:
    """``value`` and the forms a template or a tool writes it in: JSON (Jinja's
    ``tojson`` also escapes ``<>&'``), shell quoting, Python repr, URL encoding."""
    import json
    import shlex
    from urllib.parse import quote

    as_json = json.dumps(value)[1:-1]
    html_safe = (
        as_json.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("'", "\\u0027")
    )
    forms = {
        value,
        as_json,
        json.dumps(value, ensure_ascii=False)[1:-1],
        html_safe,
        shlex.quote(value),
        repr(value)[1:-1],
        quote(value, safe=""),
    }
    return {form for form in forms if form == value or len(form) >= _MIN_PIECE}


def _secret_pieces(value: str) -> set[str]:
    """Pieces of ``value`` that must not be shown either: each of its lines (tools print
    a key file line by line) and each run between spaces, quotes and backslashes (a
    quoted or escaped copy of the value shows those runs unchanged)."""
    import re

    pieces = {line.strip() for line in value.splitlines()}
    pieces |= set(re.split(r"[\s'\"\\]+", value))
    return {p for p in pieces if len(p) >= _MIN_PIECE}


#: Keys whose string values are hidden whole in traces and dry runs.
_SENSITIVE_KEYS = ("password", "passwd", "token", "secret", "api_key", "apikey")


def mask_params(
    value: Any, mask: Callable[[str], str], key: str = "", *, by_name: bool = True
) -> Any:
    """``value`` with ``mask`` applied to every string in it; with ``by_name``, strings
    under a sensitive-looking key (password, token, ...) are hidden whole."""
    if isinstance(value, Mapping):
        return {k: mask_params(v, mask, str(k), by_name=by_name) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_params(v, mask, key, by_name=by_name) for v in value]
    if isinstance(value, str):
        if by_name and value and any(word in key.lower() for word in _SENSITIVE_KEYS):
            return "***"
        return mask(value)
    return value
