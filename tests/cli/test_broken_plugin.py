"""A third-party step plugin whose import fails breaks only the machines that use it
(a real entry point: a dist-info folder on PYTHONPATH, found by importlib.metadata)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import ROOT, build_tree, run_cli

USES_IT = """\
version: 1
name: uses-broken
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
      - {name: one, uses: broken_step}
"""

PLAIN = """\
version: 1
name: plain
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
      - {name: one, uses: shell, with: {argv: ["true"]}}
"""


def _broken_plugin(root: Path) -> dict[str, str]:
    """A package 'brokenplug' declaring the step plugin 'broken_step', whose module
    raises ImportError; the environment that makes it installed."""
    build_tree(
        root,
        {
            "brokenplug-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: brokenplug\n"
            "Version: 0.1\n",
            "brokenplug-0.1.dist-info/entry_points.txt": "[runner.steps]\n"
            "broken_step = brokenplug_mod:BrokenStep\n",
            "brokenplug_mod.py": "raise ImportError('No module named needed_lib')\n",
        },
    )
    return {"PYTHONPATH": os.pathsep.join([str(ROOT), str(root)])}


def test_a_broken_plugin_warns_once_and_other_machines_go_on(tmp_path: Path) -> None:
    env = _broken_plugin(tmp_path / "site")
    work = build_tree(tmp_path / "work", {"machine.yaml": PLAIN})
    done = run_cli("validate", cwd=work, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("broken_step") == 1, done.stderr
    assert "ImportError: No module named needed_lib" in done.stderr
    assert "WARNING" in done.stderr

    # the shipped machine too, and resume reaches its own answer (nothing to resume)
    assert (
        run_cli("--machine", ROOT / "machine.yaml", "validate", cwd=work, env=env).returncode == 0
    )
    assert run_cli("create", "demo", cwd=work, env=env).returncode == 0
    resumed = run_cli("resume", "demo", cwd=work, env=env)
    assert resumed.returncode == 4, resumed.stderr
    assert "nothing to resume" in resumed.stderr
    ran = run_cli("advance", "demo", cwd=work, env=env)
    assert ran.returncode == 0, ran.stderr


def test_a_machine_that_uses_the_broken_plugin_fails_naming_it(tmp_path: Path) -> None:
    env = _broken_plugin(tmp_path / "site")
    work = build_tree(tmp_path / "work", {"machine.yaml": USES_IT})
    done = run_cli("validate", cwd=work, env=env)
    assert done.returncode == 2
    assert "step 'one' uses plugin 'broken_step', which is broken" in done.stderr
    assert "ImportError: No module named needed_lib" in done.stderr
    assert "unknown plugin" not in done.stderr
