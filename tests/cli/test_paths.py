"""Paths the user gives that cannot be used: one message, exit 2, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import build_tree, run_cli


def test_a_graph_file_that_cannot_be_written_is_bad_input(tmp_path: Path) -> None:
    for args in (
        ["graph", "-o", "/proc/version"],
        ["--output", "json", "graph", "-o", "/proc/version"],
    ):
        done = run_cli(*args, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and "internal error" not in done.stdout + done.stderr
        assert "cannot write the graph to /proc/version" in done.stdout + done.stderr
    document = json.loads(
        run_cli("--output", "json", "graph", "-o", "/proc/version", cwd=tmp_path).stdout
    )
    assert document["error"] == "InputError" and document["exit_code"] == 2


def test_a_working_directory_that_does_not_exist_is_bad_input_however_given(tmp_path: Path) -> None:
    for command in (["list"], ["status", "demo"], ["history", "demo"], ["validate"]):
        by_env = run_cli(*command, cwd=tmp_path, env={"RUNNER_WORKDIR": "/nonexistent"})
        by_option = run_cli("--workdir", "/nonexistent", *command, cwd=tmp_path)
        for done in (by_env, by_option):
            assert done.returncode == 2, (command, done.stdout, done.stderr)
            assert "working directory /nonexistent does not exist" in done.stderr


MACHINE = """\
    version: 1
    name: paths
    initial: created
    states:
      created: {description: new}
      destroying: {description: going}
      destroyed: {description: gone, final: true}
      destroy_failed: {description: failed}
    phases:
      - name: destroy
        from: any
        via: destroying
        to: destroyed
        failed: destroy_failed
        steps:
          - name: cleanup_build_files
            uses: shell
            with: {argv: [rm, -rf, "{{ env.build_dir }}"]}
"""


@pytest.mark.parametrize("field", ["build_dir", "data_dir"])
@pytest.mark.parametrize("where", ["absolute", "dotdot"])
def test_paths_in_a_state_file_must_stay_inside_the_working_directory(
    tmp_path: Path, field: str, where: str
) -> None:
    """A state file whose paths lead outside (an absolute build_dir once made `destroy`
    delete a folder outside the working directory) is refused, nothing is deleted."""
    work = tmp_path / "work"
    outside = tmp_path / "precious"
    (outside / "keep").mkdir(parents=True)
    build_tree(work, {"machine.yaml": MACHINE})
    assert run_cli("create", "demo", cwd=work).returncode == 0
    state = work / "data" / "demo" / "state.json"
    record = json.loads(state.read_text())
    record["paths"][field] = str(outside) if where == "absolute" else "../precious"
    state.write_text(json.dumps(record))
    for command in (["status", "demo"], ["destroy", "demo"]):
        done = run_cli(*command, cwd=work)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "leads outside the working directory" in done.stderr
    assert (outside / "keep").is_dir()
    assert json.loads(state.read_text()) == record
