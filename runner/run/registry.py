"""The step plugin registry: an object, filled from the ``runner.steps`` entry points.

Built-in steps are registered through the same entry point group as third-party
ones (see pyproject.toml). An entry point is imported when its plugin is first asked
for (a phase of `shell` steps never imports the OpenTofu or HTTP plugins); asking for
every name (:meth:`StepRegistry.names`) imports them all. Each plugin is checked when
it registers. A plugin that cannot be loaded (its import fails, or it is not a valid
Step) is set aside with a warning: it breaks only the machines that use it
(:meth:`StepRegistry.load_problem`).
"""

from __future__ import annotations

import os
import re

from runner.errors import InputError
from runner.log import logger
from runner.plugin import Step

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ENTRY_POINT_GROUP = "runner.steps"
_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")
log = logger()


class PluginError(InputError):
    """A step plugin is broken (bad name, missing or invalid schema, not a Step)."""


class StepRegistry:
    def __init__(self) -> None:
        self._plugins: dict[str, type[Step]] = {}
        self._validators: dict[str, Any] = {}
        self._fast_checks: dict[str, Any] = {}
        self._broken: dict[str, str] = {}
        #: Entry points found but not imported yet, by name.
        self._pending: dict[str, list[Any]] = {}

    @property
    def broken(self) -> dict[str, str]:
        """Entry points that could not be loaded: their name, and why (all imported)."""
        self._load_all()
        return self._broken

    def register(self, plugin: Any, *, source: str = "") -> None:
        where = f" (from {source})" if source else ""
        if not isinstance(plugin, type) or not issubclass(plugin, Step):
            raise PluginError(
                f"step plugin {plugin!r}{where} is not a subclass of runner.plugin.Step"
            )
        name = getattr(plugin, "name", None)
        if not isinstance(name, str) or not _NAME.match(name):
            raise PluginError(
                f"step plugin {plugin.__qualname__}{where} has no valid `name` "
                "(lowercase letters, digits, '_', '.', '-')"
            )
        schema = getattr(plugin, "params_schema", None)
        if not isinstance(schema, dict):
            raise PluginError(f"step plugin '{name}'{where} has no `params_schema` dict")
        problem = _schema_problem(schema)
        if problem:
            raise PluginError(
                f"step plugin '{name}'{where} has an invalid params_schema: {problem}"
            )
        if name in self._plugins and self._plugins[name] is not plugin:
            raise PluginError(f"two step plugins are named '{name}'{where}")
        self._plugins[name] = plugin

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Find the plugins the entry points of ``group`` declare; each is imported
        when it is first asked for."""
        for ep in entry_points(group):
            self._pending.setdefault(ep.name, []).append(ep)

    def _load(self, name: str) -> None:
        """Import the entry points named ``name``, if any are still pending; a plugin
        whose own name is another than its entry point's is found by loading them all."""
        for ep in self._pending.pop(name, ()):
            try:
                plugin = ep.load()
                self.register(plugin, source=ep.value)
            except PluginError as exc:
                self._set_aside(ep.name, exc.message)
            except Exception as exc:
                self._set_aside(
                    ep.name,
                    f"step plugin '{ep.name}' ({ep.value}) failed to load: "
                    f"{type(exc).__name__}: {exc}",
                )

    def _load_all(self) -> None:
        while self._pending:
            self._load(next(iter(self._pending)))

    def _find(self, name: str) -> type[Step] | None:
        plugin = self._plugins.get(name)
        if plugin is None and self._pending:
            self._load(name)
            plugin = self._plugins.get(name)
            if plugin is None and name not in self._broken:
                self._load_all()
                plugin = self._plugins.get(name)
        return plugin

    def _set_aside(self, name: str, problem: str) -> None:
        """A broken plugin: machines that do not use it go on (one warning says so);
        the ones that do fail with ``problem`` (:meth:`load_problem`)."""
        if name in self._broken:
            return
        self._broken[name] = problem
        log.warning(
            "%s; machines that use it fail, others go on (reinstall the package that "
            "provides it, or uninstall it)",
            problem,
        )

    def load_problem(self, name: str) -> str | None:
        """Why the plugin ``name`` is not available although installed, if it is broken."""
        return None if self._find(name) is not None else self._broken.get(name)

    def names(self) -> list[str]:
        self._load_all()
        return sorted(self._plugins)

    def get(self, name: str) -> type[Step] | None:
        return self._find(name)

    def create(self, name: str) -> Step:
        plugin = self._find(name)
        if plugin is None and name in self._broken:
            raise PluginError(
                self._broken[name], hint="reinstall the package that provides it, or uninstall it"
            )
        if plugin is None:
            raise PluginError(
                f"no step plugin named '{name}'",
                hint=f"installed plugins: {', '.join(self.names())}",
            )
        return plugin()

    def param_errors(
        self, name: str, params: Any, templated: frozenset[str] = frozenset()
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """Schema errors of ``params`` for plugin ``name``: (path inside `with`, message).

        ``templated`` names parameters left out of ``params`` because their values are
        only known when the step runs; they still count as given for ``required``.
        Valid parameters (the common case) are recognised by :mod:`runner.minischema`
        when the plugin's schema is within its subset; `jsonschema` explains errors
        (and reports a templated parameter as missing: the caller filters those).
        """
        self._find(name)
        fast = self._fast_checks.get(name, _UNCOMPILED)
        if fast is _UNCOMPILED:
            from runner.minischema import UnsupportedSchema, compile_schema

            schema = dict(self._plugins[name].params_schema)
            required = frozenset(schema.pop("required", ()))
            try:
                fast = (compile_schema(schema), required)
            except UnsupportedSchema:
                fast = None
            self._fast_checks[name] = fast
        if fast is not None:
            check, required = fast
            given = params.keys() | templated if isinstance(params, dict) else frozenset()
            if required <= given and check(params, "") is None:
                return []
        validator = self._validators.get(name)
        if validator is None:
            from jsonschema import Draft202012Validator

            validator = Draft202012Validator(self._plugins[name].params_schema)
            self._validators[name] = validator
        return [
            (tuple(err.absolute_path), err.message)
            for err in sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
        ]


_UNCOMPILED: Any = object()


def _schema_problem(schema: dict[str, Any]) -> str | None:
    """What makes ``schema`` an invalid JSON Schema, or None. A schema within
    :mod:`runner.minischema`'s keywords is judged there; `jsonschema` (slow to import)
    only for the others."""
    from runner.minischema import well_formed

    if well_formed(schema):
        return None
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return str(exc.message)
    return None


class EntryPoint:
    """One entry point of a distribution's ``entry_points.txt``, as
    :class:`importlib.metadata.EntryPoint` reads it: ``name = module:attr``."""

    __slots__ = ("group", "name", "value")

    def __init__(self, name: str, value: str, group: str) -> None:
        self.name, self.value, self.group = name, value, group

    def __repr__(self) -> str:
        return f"EntryPoint(name={self.name!r}, value={self.value!r}, group={self.group!r})"

    def load(self) -> Any:
        """The object the entry point names (its module imported)."""
        import importlib

        module, _, attrs = self.value.partition("[")[0].partition(":")
        if not module.strip():
            raise ValueError(f"not an entry point reference: {self.value!r}")
        found = importlib.import_module(module.strip())
        for attr in attrs.strip().split("."):
            if attr:
                found = getattr(found, attr)
        return found


_INFO_SUFFIXES = (".dist-info", ".egg-info")


def entry_points(group: str) -> list[Any]:
    """The entry points of ``group`` of every distribution on the import path, in the
    order :func:`importlib.metadata.entry_points` gives them (the first distribution of
    a name on the path wins). The metadata folders are read directly: importing
    :mod:`importlib.metadata` (:mod:`email`, :mod:`csv`, :mod:`zipfile`, ...) and
    building a Distribution for each of the hundred-odd installed ones costs a command
    that runs one `shell` step more than its step. An import path that is not plain
    folders (an archive, an egg, a finder of its own) is left to importlib.metadata."""
    import sys
    from importlib.machinery import PathFinder

    if any(
        finder is not PathFinder and getattr(finder, "find_distributions", None) is not None
        for finder in sys.meta_path
    ):
        return _metadata_entry_points(group)
    seen: set[str] = set()
    found: list[Any] = []
    for entry in sys.path:
        root = entry or "."
        try:
            children = os.listdir(root)
        except NotADirectoryError:
            return _metadata_entry_points(group)  # an archive on the path
        except OSError:
            continue
        if root.lower().endswith(".egg"):
            return _metadata_entry_points(group)
        # grouped by distribution name in the folder's order, as importlib.metadata does
        infos: dict[str, list[str]] = {}
        for child in children:
            low = child.lower()
            if low.endswith(_INFO_SUFFIXES):
                if not child.endswith(_INFO_SUFFIXES):
                    return _metadata_entry_points(group)  # its name is read another way
                name = _normalized(low.rpartition(".")[0].partition("-")[0])
                infos.setdefault(name, []).append(os.path.join(root, child))
        for name, folders in infos.items():
            for folder in folders:
                if name in seen:
                    continue
                seen.add(name)
                found += _declared(os.path.join(folder, "entry_points.txt"), group)
    return found


def _normalized(name: str) -> str:
    """A distribution's name as importlib.metadata compares them: runs of ``-``, ``_``
    and ``.`` are one ``_`` (the name is lower case already)."""
    name = name.replace("-", "_").replace(".", "_")
    while "__" in name:
        name = name.replace("__", "_")
    return name


def _declared(path: str, group: str) -> list[Any]:
    """The entry points of ``group`` in one ``entry_points.txt`` (none if unreadable).
    A file that does not name the group's section (most) is not parsed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:
        return []
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if f"[{group}]".encode() not in data:
        return []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return []
    found: list[Any] = []
    section = None
    for line in map(str.strip, text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
        elif section == group:
            name, _, value = line.partition("=")
            found.append(EntryPoint(name.strip(), value.strip(), group))
    return found


def _metadata_entry_points(group: str) -> list[Any]:
    from importlib.metadata import entry_points as installed

    return list(installed(group=group))


def default_registry() -> StepRegistry:
    """A registry with every installed plugin (built-ins included)."""
    registry = StepRegistry()
    registry.load_entry_points()
    return registry
