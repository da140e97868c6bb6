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

import re
from typing import Any

from runner.errors import InputError
from runner.log import logger
from runner.plugin import Step

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
        from importlib.metadata import entry_points

        for ep in entry_points(group=group):
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


def default_registry() -> StepRegistry:
    """A registry with every installed plugin (built-ins included)."""
    registry = StepRegistry()
    registry.load_entry_points()
    return registry
