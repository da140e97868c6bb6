"""The step plugin registry and the built-in plugins' declarations."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import pytest
from jsonschema import Draft202012Validator

from runner.plugin import Step, StepContext
from runner.run.registry import ENTRY_POINT_GROUP, PluginError, StepRegistry, default_registry
from tests.helpers import ROOT, cli_env

BUILT_INS = {
    "template": "steps.template:TemplateStep",
    "shell": "steps.shell:ShellStep",
    "tofu": "steps.tofu:TofuStep",
    "ansible": "steps.ansible:AnsibleStep",
    "wait_ssh": "steps.wait_ssh:WaitSshStep",
    "http_check": "steps.http_check:HttpCheckStep",
}
DOCS = ROOT / "docs" / "plugins.md"


def built_in(name: str) -> type[Step]:
    plugin = default_registry().get(name)
    assert plugin is not None
    return plugin


def test_the_registry_loads_every_built_in_from_the_entry_points() -> None:
    registry = default_registry()
    assert set(BUILT_INS) <= set(registry.names())
    declared = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for name, target in BUILT_INS.items():
        assert declared[name] == target
        plugin = registry.get(name)
        assert plugin is not None and plugin.name == name
        assert isinstance(registry.create(name), Step)


class _Valid(Step):
    name = "valid"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False}

    def run(self, ctx: StepContext, params: dict[str, Any]) -> dict[str, Any]:
        return {}


class _NoSchema(Step):
    name = "no_schema"

    def run(self, ctx: StepContext, params: dict[str, Any]) -> dict[str, Any]:
        return {}


class _BadName(_Valid):
    name = "Bad Name"


class _BadSchema(_Valid):
    name = "bad_schema"
    params_schema: ClassVar[dict[str, Any]] = {"type": "no-such-type"}


class _NotAStep:
    name = "not_a_step"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object"}


def test_a_valid_plugin_registers() -> None:
    registry = StepRegistry()
    registry.register(_Valid, source="tests")
    assert registry.names() == ["valid"]
    assert registry.param_errors("valid", {}) == []
    assert registry.param_errors("valid", {"unexpected": 1})


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        (_NoSchema, "no `params_schema`"),
        (_BadName, "no valid `name`"),
        (_BadSchema, "invalid params_schema"),
        (_NotAStep, "not a subclass of runner.plugin.Step"),
        (_Valid(), "not a subclass"),
    ],
)
def test_a_broken_plugin_is_refused(plugin: Any, message: str) -> None:
    registry = StepRegistry()
    with pytest.raises(PluginError, match=re.escape(message)):
        registry.register(plugin, source="tests")
    assert registry.names() == []


def test_two_plugins_with_one_name_are_refused() -> None:
    class Other(_Valid):
        pass

    registry = StepRegistry()
    registry.register(_Valid)
    with pytest.raises(PluginError, match="two step plugins"):
        registry.register(Other)


@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_every_built_in_has_a_complete_schema(name: str) -> None:
    plugin = built_in(name)
    schema = plugin.params_schema
    Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert plugin.description
    assert schema["properties"]
    for key, spec in schema["properties"].items():
        assert spec.get("description"), f"{name}.{key} has no description"
    for key in schema.get("required", []):
        assert key in schema["properties"]
    # every declared default is valid for its own parameter
    validator = Draft202012Validator(schema)
    for key, spec in schema["properties"].items():
        if "default" in spec:
            required = {k: _example(schema["properties"][k]) for k in schema.get("required", [])}
            errors = list(validator.iter_errors({**required, key: spec["default"]}))
            assert not errors, f"{name}.{key} default: {errors[0].message}"


def _example(spec: dict[str, Any]) -> Any:
    if "enum" in spec:
        return spec["enum"][0]
    if spec.get("type") == "array":
        return ["x"]
    if spec.get("pattern", "").startswith("^http"):
        return "http://127.0.0.1/"
    return "x"


def test_the_shipped_machine_uses_the_parameters_the_built_ins_declare() -> None:
    registry = default_registry()
    assert registry.param_errors("tofu", {"command": "apply", "dir": "build/x", "vars": {}}) == []
    assert registry.param_errors("shell", {"argv": ["rm", "-rf", "build/x"]}) == []
    assert (
        registry.param_errors("http_check", {"url": "http://h/", "status": 200, "timeout": "60s"})
        == []
    )
    assert registry.param_errors("wait_ssh", {"host": "h", "port": 22, "timeout": "5m"}) == []
    assert registry.param_errors("wait_ssh", {"host": "h", "timeout": "soon"})
    assert registry.param_errors("shell", {"argv": []})
    assert registry.param_errors("tofu", {"command": "explode", "dir": "x"})


@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_the_plugin_guide_documents_every_parameter(name: str) -> None:
    text = DOCS.read_text()
    heading = f"### `{name}`"
    assert heading in text, f"docs/plugins.md has no section {heading}"
    section = text.split(heading, 1)[1].split("\n### ", 1)[0]
    for key in built_in(name).params_schema["properties"]:
        assert f"`{key}`" in section, f"docs/plugins.md does not document {name}.{key}"


def test_a_plugin_is_imported_when_it_is_first_asked_for() -> None:
    """A phase of `shell` steps never imports the other plugins (the HTTP one imports
    http.client and ssl); asking for every name imports them all."""
    probe = (
        "import json, sys; from runner.run.registry import default_registry\n"
        "registry = default_registry()\n"
        "loaded = lambda: json.dumps(sorted(m for m in sys.modules if m.startswith('steps.')))\n"
        "print(loaded()); registry.get('shell'); print(loaded())\n"
        "registry.names(); print(loaded())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env=cli_env(), capture_output=True, text=True, check=True
    )
    before, after_shell, after_all = (json.loads(line) for line in done.stdout.splitlines())
    assert before == [] and after_shell == ["steps.shell"]
    assert {f"steps.{name}" for name in BUILT_INS} <= set(after_all)


def _pairs(found: Any) -> list[tuple[str, str, str]]:
    return [(ep.name, ep.value, ep.group) for ep in found]


@pytest.mark.parametrize("group", [ENTRY_POINT_GROUP, "console_scripts", "pytest11"])
def test_the_entry_points_are_those_importlib_metadata_finds(group: str) -> None:
    """The registry reads the metadata folders itself: the same entry points, in the
    same order, as the standard library's reader, on this interpreter's import path."""
    from runner.run.registry import entry_points as found

    assert _pairs(found(group)) == _pairs(entry_points(group=group))


def test_the_first_distribution_of_a_name_on_the_path_declares_its_plugins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two folders on the path hold a distribution of one name (spelled two ways):
    only the first one's entry points count, as for importlib.metadata; comments, other
    groups and a metadata folder without entry points are skipped."""
    from runner.run.registry import entry_points as found

    first, second = tmp_path / "first", tmp_path / "second"
    (first / "My_Plugins-1.0.dist-info").mkdir(parents=True)
    (first / "My_Plugins-1.0.dist-info/entry_points.txt").write_text(
        "# generated\n[console_scripts]\nmy-tool = my_plugins.cli:main\n\n"
        "[runner.steps]\nping = my_plugins.steps:Ping\n  pong=my_plugins.steps:Pong [extra]\n"
    )
    (first / "quiet-2.0.dist-info").mkdir()
    (second / "my.plugins-0.9.dist-info").mkdir(parents=True)
    (second / "my.plugins-0.9.dist-info/entry_points.txt").write_text(
        "[runner.steps]\nold = my_plugins.old:Old\n"
    )
    (second / "other-1.0.egg-info").mkdir()
    (second / "other-1.0.egg-info/entry_points.txt").write_text(
        "[runner.steps]\nother = other_steps:Other\n"
    )
    monkeypatch.syspath_prepend(str(second))
    monkeypatch.syspath_prepend(str(first))
    ours = [p for p in _pairs(found(ENTRY_POINT_GROUP)) if p[1].startswith(("my_", "other"))]
    assert ours == [
        ("ping", "my_plugins.steps:Ping", ENTRY_POINT_GROUP),
        ("pong", "my_plugins.steps:Pong [extra]", ENTRY_POINT_GROUP),
        ("other", "other_steps:Other", ENTRY_POINT_GROUP),
    ]
    assert _pairs(found(ENTRY_POINT_GROUP)) == _pairs(entry_points(group=ENTRY_POINT_GROUP))


def test_an_entry_point_loads_the_object_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``module:attr.attr`` (extras ignored) is imported and looked up; a plugin whose
    module is missing is set aside with the reason, as any broken plugin."""
    from runner.run.registry import entry_points as found

    (tmp_path / "pkg_demo_steps").mkdir()
    (tmp_path / "pkg_demo_steps/__init__.py").write_text(
        "from runner.plugin import Step\n"
        "class Holder:\n"
        "    class Demo(Step):\n"
        "        name = 'demo_nested'\n"
        "        params_schema = {'type': 'object'}\n"
        "        def run(self, ctx, params):\n"
        "            return {}\n"
    )
    (tmp_path / "demo_steps-1.0.dist-info").mkdir()
    (tmp_path / "demo_steps-1.0.dist-info/entry_points.txt").write_text(
        "[demo.steps]\ndemo_nested = pkg_demo_steps : Holder.Demo [fast]\n"
        "gone = pkg_demo_missing:Gone\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    nested, gone = found("demo.steps")
    plugin = nested.load()
    assert plugin.__qualname__ == "Holder.Demo" and plugin.name == "demo_nested"
    with pytest.raises(ModuleNotFoundError):
        gone.load()
    registry = StepRegistry()
    registry.load_entry_points("demo.steps")
    assert registry.get("demo_nested") is plugin
    assert "pkg_demo_missing" in (registry.load_problem("gone") or "")
