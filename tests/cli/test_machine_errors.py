"""What each command does when machine.yaml is broken (docs/machine-yaml.md): every
command that uses the machine exits 2 naming FILE:LINE:COLUMN and writes nothing;
`list` and `history` read only the environments' own files and still work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import build_tree, cli_env, run_cli

MACHINE = """\
    version: 1
    name: small
    initial: created
    states:
      created: {}
      building: {}
      built: {}
      build_failed: {}
    phases:
      - name: build
        from: created
        via: building
        to: built
        failed: build_failed
        steps:
          - {name: one, uses: shell, with: {argv: ["true"]}}
"""

NEEDS_THE_MACHINE = [
    ("validate",),
    ("graph",),
    ("create", "other"),
    ("status", "demo"),
    ("--output", "json", "status", "demo"),
    ("advance", "demo"),
    ("up", "demo"),
    ("resume", "demo"),
    ("phase", "demo", "build"),
    ("destroy", "demo"),
]

READS_STATE_ONLY = [
    ("list",),
    ("--output", "json", "list"),
    ("history", "demo"),
    ("history", "demo", "-n", "1"),
    ("--output", "json", "history", "demo"),
]


def typer_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The same command through the typer application (no fast path)."""
    code = "import sys; sys.argv[0] = 'runner'; from runner.cli.app import app; app(prog_name='runner')"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An environment `demo` created with a valid machine, which is then broken: phase
    `build` starts from a state that is not declared."""
    root = tmp_path_factory.mktemp("broken")
    build_tree(root, {"machine.yaml": MACHINE})
    created = run_cli("create", "demo", cwd=root)
    assert created.returncode == 0, created.stderr
    text = (root / "machine.yaml").read_text()
    (root / "machine.yaml").write_text(text.replace("from: created", "from: creatd"))
    return root


def broken_at(work: Path) -> str:
    lines = (work / "machine.yaml").read_text().splitlines()
    line = next(n for n, text in enumerate(lines, 1) if "from: creatd" in text)
    return f"{work / 'machine.yaml'}:{line}:"


@pytest.mark.parametrize("args", NEEDS_THE_MACHINE, ids=[" ".join(a) for a in NEEDS_THE_MACHINE])
def test_a_command_that_needs_the_machine_exits_2_with_the_line(
    work: Path, args: tuple[str, ...]
) -> None:
    before = (work / "data" / "demo" / "state.json").read_bytes()
    proc = run_cli(*args, cwd=work)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    said = proc.stdout if "json" in args else proc.stderr
    assert broken_at(work) in said
    assert "state 'creatd' is not declared" in said
    assert "Traceback" not in proc.stderr
    # nothing was run or written
    assert (work / "data" / "demo" / "state.json").read_bytes() == before
    assert not (work / "data" / "other").exists()
    assert not (work / "build").exists()


@pytest.mark.parametrize("args", READS_STATE_ONLY, ids=[" ".join(a) for a in READS_STATE_ONLY])
def test_list_and_history_work_without_a_valid_machine(work: Path, args: tuple[str, ...]) -> None:
    for proc in (run_cli(*args, cwd=work), typer_cli(*args, cwd=work)):
        assert proc.returncode == 0, proc.stderr
        assert "creatd" not in proc.stdout + proc.stderr
        if "json" in args:
            document = json.loads(proc.stdout)
            assert "environments" in document or "events" in document
        if "list" in args:
            assert "demo" in proc.stdout and "created" in proc.stdout
        else:
            assert "created" in proc.stdout


def test_plugin_checks_are_made_by_validate_and_the_commands_that_run_a_phase(
    tmp_path: Path,
) -> None:
    build_tree(tmp_path, {"machine.yaml": MACHINE.replace("uses: shell", "uses: nosuch", 1)})
    # create, status and graph do not load the plugins
    for args in (("create", "demo"), ("status", "demo"), ("graph",)):
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 0, (args, proc.stderr)
    for args in (("validate",), ("advance", "demo"), ("phase", "demo", "build")):
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "step 'one' uses unknown plugin 'nosuch'" in proc.stderr
    assert json.loads((tmp_path / "data/demo/state.json").read_text())["state"] == "created"
