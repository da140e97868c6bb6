"""The cache of complete verdicts (plugins and templates checked): a repeat `validate`
of unchanged inputs imports none of the checking machinery, and a change of any input
(the machine, an installed distribution, a plugin's module or its helpers, the entry
points) is a full check again. The plugin is a real entry point: a dist-info folder on
PYTHONPATH, found by importlib.metadata."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from runner.api.runner import Runner
from tests.helpers import ROOT, build_tree, run_cli, run_cli_imports

MACHINE = """\
version: 1
name: sized
initial: a
states:
  a: {}
  b: {}
  b_failed: {}
  b_going: {}
phases:
  - name: go
    from: a
    via: b_going
    to: b
    failed: b_failed
    steps:
      - {name: one, uses: sized, with: {size: 3}}
      - {name: two, uses: shell, with: {argv: ["echo", "{{ env.name }}"]}}
"""

MODULE = """\
from runner.plugin import Step
from sizedplug_schema import SCHEMA


class SizedStep(Step):
    name = "sized"
    params_schema = SCHEMA

    def run(self, ctx, params):
        return {}
"""

INTEGER = """\
SCHEMA = {"type": "object", "properties": {"size": {"type": "integer"}},
          "required": ["size"], "additionalProperties": False}
"""

#: The checking machinery a repeat `validate` of unchanged inputs must not import.
MACHINERY = ("ruamel", "jinja2", "jsonschema", "transitions", "importlib.metadata", "steps.")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder on PYTHONPATH where the distribution 'sizedplug' is installed: the step
    plugin 'sized', whose schema comes from a helper module."""
    return build_tree(
        tmp_path / "site",
        {
            "sizedplug-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: sizedplug\n"
            "Version: 0.1\n",
            "sizedplug-0.1.dist-info/entry_points.txt": "[runner.steps]\n"
            "sized = sizedplug_mod:SizedStep\n",
            "sizedplug_mod.py": MODULE,
            "sizedplug_schema.py": INTEGER,
        },
        dedent=False,
    )


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return build_tree(tmp_path / "work", {"machine.yaml": MACHINE, "data/.keep": ""}, dedent=False)


def _env(site: Path) -> dict[str, str]:
    # no bytecode cache: an edited module of the same second is compiled again
    return {"PYTHONPATH": os.pathsep.join([str(ROOT), str(site)]), "PYTHONDONTWRITEBYTECODE": "1"}


def _run(work: Path, site: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """`runner ARGS` in ``work``, and the modules it imported."""
    return run_cli_imports(*args, cwd=work, env=_env(site))


def _validate(work: Path, site: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    return _run(work, site, "validate")


def _checking(imported: set[str]) -> list[str]:
    return sorted(m for m in imported if m.startswith(MACHINERY))


def _entries(work: Path) -> list[Path]:
    return sorted((work / "data" / ".cache").glob("checked-*.json"))


def _valid_twice(work: Path, site: Path) -> None:
    """A full check that keeps its verdict, then a repeat served from it."""
    first, imported = _validate(work, site)
    assert first.returncode == 0, first.stderr
    assert "runner.machine.loader" in imported and "jinja2" in imported
    assert len(_entries(work)) == 1
    again, imported = _validate(work, site)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert _checking(imported) == []


def test_a_repeat_validate_imports_none_of_the_checking_machinery(work: Path, site: Path) -> None:
    _valid_twice(work, site)
    # the same answer in JSON, from the verdict
    done = run_cli("--output", "json", "validate", cwd=work, env=_env(site))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["valid"] is True


def _write(relative: str, text: str) -> Callable[[Path, Path], object]:
    return lambda work, site: (work.parent / relative).write_text(text)


CHANGES = {
    "the machine": (
        _write("work/machine.yaml", MACHINE.replace("size: 3", "size: three")),
        "(sized): 'three' is not of type 'integer'",
    ),
    "a plugin's helper module": (
        _write("site/sizedplug_schema.py", INTEGER.replace("integer", "string")),
        "`with` of step 'one' (sized): 3 is not of type 'string'",
    ),
    "a plugin's module": (
        _write("site/sizedplug_mod.py", MODULE.replace('name = "sized"', 'name = "sizes"')),
        "step 'one' uses unknown plugin 'sized'",
    ),
    "entry points edited in place": (
        _write(
            "site/sizedplug-0.1.dist-info/entry_points.txt",
            "[runner.steps]\nsized = sizedplug_mod:NoSuchStep\n",
        ),
        "step 'one' uses plugin 'sized', which is broken",
    ),
    "an uninstalled distribution": (
        lambda work, site: shutil.rmtree(site / "sizedplug-0.1.dist-info"),
        "step 'one' uses unknown plugin 'sized'",
    ),
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_change_of_an_input_is_seen(work: Path, site: Path, change: str) -> None:
    _valid_twice(work, site)
    edit, message = CHANGES[change]
    edit(work, site)
    done, _ = _validate(work, site)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def test_a_newly_installed_broken_plugin_warns_every_time(work: Path, site: Path) -> None:
    _valid_twice(work, site)
    build_tree(
        site,
        {
            "brokenplug-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: brokenplug\n"
            "Version: 0.1\n",
            "brokenplug-0.1.dist-info/entry_points.txt": "[runner.steps]\n"
            "broken_step = brokenplug_mod:BrokenStep\n",
            "brokenplug_mod.py": "raise ImportError('No module named needed_lib')\n",
        },
    )
    for _ in range(2):  # a verdict with a warning to give is never kept
        done, _ = _validate(work, site)
        assert done.returncode == 0, done.stderr
        assert "broken_step" in done.stderr and "WARNING" in done.stderr


def test_a_new_module_on_the_import_path_is_seen(work: Path, site: Path) -> None:
    """A module that appears in a folder earlier on the import path hides the helper the
    verdict was drawn from."""
    early = site.parent / "early"
    early.mkdir()
    env = {"PYTHONPATH": os.pathsep.join([str(early), str(ROOT), str(site)])}
    for _ in range(2):
        assert run_cli("validate", cwd=work, env=env).returncode == 0
    assert len(_entries(work)) == 1
    (early / "sizedplug_schema.py").write_text(INTEGER.replace("integer", "string"))
    done = run_cli("validate", cwd=work, env=env)
    assert done.returncode == 2
    assert "3 is not of type 'string'" in done.stderr


def test_a_corrupt_or_foreign_entry_is_ignored(work: Path, site: Path) -> None:
    _valid_twice(work, site)
    (entry,) = _entries(work)
    document = json.loads(entry.read_text())
    for bad in (
        b"",
        b"{not json",
        json.dumps({"stamps": document["stamps"]}).encode(),
        json.dumps({**document, "stamps": [[str(work / "nothing"), [1, 2, 3, 4]]]}).encode(),
        # the verdict on other bytes (the same key, another file's machine)
        json.dumps({**document, "machine": {**document["machine"], "digest": "sha256:0"}}).encode(),
    ):
        entry.write_bytes(bad)
        done, imported = _validate(work, site)
        assert done.returncode == 0, done.stderr
        assert "valid machine 'sized'" in done.stdout
        assert "jinja2" in imported  # checked again, and the entry rewritten
        assert json.loads(entry.read_text())["machine"] == document["machine"]


def test_an_invalid_machine_is_never_kept(work: Path, site: Path) -> None:
    (work / "machine.yaml").write_text(MACHINE.replace("uses: sized", "uses: sizd"))
    for _ in range(2):
        done, _ = _validate(work, site)
        assert done.returncode == 2
        assert "unknown plugin 'sizd'" in done.stderr
    assert _entries(work) == []


def test_every_command_that_checks_plugins_uses_the_kept_verdict(
    work: Path, site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the API: once a verdict is kept, the plugin check of `advance`, `up`,
    `check`... (:meth:`Runner.machine`) reads no entry point and loads no plugin; the
    engine loads the ones it runs."""
    monkeypatch.syspath_prepend(str(site))
    first = Runner(work)
    assert first.machine().name == "sized"
    assert first._registry is not None and "sized" in first._registry.names()
    again = Runner(work)
    machine = again.machine()
    assert machine == first.machine()
    assert again._registry is None
    assert again.machine() is machine


def test_graph_after_validate_loads_nothing_again(work: Path, site: Path) -> None:
    """A clean full check also keeps the machine for the commands without plugin
    checks (`status`, `graph`, ...): after `validate` of the same bytes they import
    neither ruamel nor Jinja2."""
    first, _ = _validate(work, site)
    assert first.returncode == 0, first.stderr
    assert len(list((work / "data" / ".cache").glob("machine-*.json"))) == 1
    graph, imported = _run(work, site, "graph")
    assert graph.returncode == 0, graph.stderr
    assert "stateDiagram" in graph.stdout
    assert [m for m in imported if m.startswith(("ruamel", "jinja2"))] == []
