"""The commands that run no step (`status`, `list`, `history`, `graph`, `create`)
check the machine's structure, not the Jinja2 syntax of its templates: a machine with a
broken template still answers them, from a cold machine cache without importing Jinja2,
while `validate` and every command that runs steps refuse it, with file and line, before
any step runs, whatever the cache holds."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.helpers import build_tree, run_cli, run_cli_imports

MACHINE = """\
version: 1
name: tmpl
initial: created
states:
  created: {}
  building: {}
  built: {}
  build_failed:
    recovery: "fix the build, then runner resume {{ env.name }}"
phases:
  - name: build
    from: created
    via: building
    to: built
    failed: build_failed
    steps:
      - {name: mark, uses: shell, with: {argv: ["touch", "marker"]}}
      - name: compile
        uses: shell
        when: "inputs.get('skip') != true"
        with: {argv: ["STEP"]}
"""

BROKEN_WHEN = ("when: \"inputs.get('skip') != true\"", "when: \"inputs.get('skip') !=\"")
BROKEN_RECOVERY = ("then runner resume {{ env.name }}", "then {% if %} runner resume")


def _machine(step: str = "true", *edits: tuple[str, str]) -> str:
    text = MACHINE.replace('"STEP"', f'"{step}"')
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    return text


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _refused(proc: subprocess.CompletedProcess[str], line: int, *words: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert any(
        f"machine.yaml:{line}:" in text and all(w in text for w in words)
        for text in proc.stderr.splitlines()
    ), proc.stderr


def _status(work: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """`runner status demo` from a cold machine cache, and the modules it imported."""
    shutil.rmtree(work / "data" / ".cache", ignore_errors=True)
    return run_cli_imports("status", "demo", cwd=work)


def test_a_broken_when_is_refused_by_validate_and_advance_not_by_status(tmp_path: Path) -> None:
    work = build_tree(tmp_path, {"machine.yaml": _machine()}, dedent=False)
    assert run_cli("create", "demo", cwd=work).returncode == 0
    broken = _machine("true", BROKEN_WHEN)
    (work / "machine.yaml").write_text(broken)
    line = _line_of(broken, "when:")

    status, imported = _status(work)
    assert status.returncode == 0, status.stderr
    assert "created" in status.stdout
    assert "runner advance demo" in status.stdout
    assert not [m for m in imported if m.startswith("jinja2")]
    assert list((work / "data" / ".cache").glob("machine-*.json"))  # the structure verdict

    for command in (("validate",), ("advance", "demo"), ("up", "demo")):
        # the kept structure verdict is never taken for the full one
        _refused(run_cli(*command, cwd=work), line, "`when` of step 'compile'", "template syntax")
    assert not (work / "marker").exists()  # refused before the first step ran
    again = run_cli("status", "demo", cwd=work)  # from the warm cache
    assert (again.returncode, again.stdout) == (0, status.stdout)
    assert run_cli("list", cwd=work).returncode == 0
    assert run_cli("create", "other", cwd=work).returncode == 0

    (work / "machine.yaml").write_text(_machine())  # fixed: the edit is seen at once
    assert run_cli("validate", cwd=work).returncode == 0
    assert run_cli("advance", "demo", cwd=work).returncode == 0
    assert (work / "marker").exists()


def test_a_broken_recovery_text_in_the_failed_state_is_shown_as_such(tmp_path: Path) -> None:
    """`status` of an environment in a state whose recovery text does not parse says so
    in its advice; `resume` refuses the machine with the text's line."""
    work = build_tree(tmp_path, {"machine.yaml": _machine("false")}, dedent=False)
    assert run_cli("create", "demo", cwd=work).returncode == 0
    assert run_cli("advance", "demo", cwd=work).returncode != 0  # a real failing step
    broken = _machine("false", BROKEN_RECOVERY)
    (work / "machine.yaml").write_text(broken)

    status, _ = _status(work)
    assert status.returncode == 0, status.stderr
    assert "build_failed" in status.stdout
    assert "recovery text did not render: template syntax error" in status.stdout
    assert "runner resume demo" in status.stdout

    _refused(
        run_cli("resume", "demo", cwd=work),
        _line_of(broken, "recovery:"),
        "recovery text",
        "template syntax error",
    )
    assert "build_failed" in run_cli("status", "demo", cwd=work).stdout
