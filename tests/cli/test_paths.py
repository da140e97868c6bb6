"""Paths the user gives that cannot be used: one message, exit 2, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import run_cli


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
