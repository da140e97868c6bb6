"""Inside data/<env> the runner never follows a symbolic link it did not make: a link
planted as state.lock, events.jsonl, state.json, runs/, traces/ or the environment's
folder itself is refused with a message naming it, and what it points to is untouched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import build_tree, run_cli

MACHINE = """\
    version: 1
    name: links
    initial: created
    states:
      created: {description: new}
      building: {description: building}
      built: {description: built}
      build_failed: {description: failed}
    phases:
      - name: build
        from: created
        via: building
        to: built
        failed: build_failed
        steps:
          - {name: one, uses: shell, with: {argv: ["sh", "-c", "echo hello"]}}
"""


@pytest.fixture
def work(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    build_tree(work, {"machine.yaml": MACHINE})
    assert run_cli("create", "demo", cwd=work).returncode == 0
    return work


@pytest.mark.parametrize("planted", ["state.lock", "events.jsonl", "state.json"])
def test_a_linked_file_is_refused_and_its_target_untouched(
    work: Path, tmp_path: Path, planted: str
) -> None:
    target = tmp_path / "outside.txt"
    path = work / "data" / "demo" / planted
    if planted == "state.json":
        target.write_bytes(path.read_bytes())  # a valid record, somewhere else
    else:
        target.write_text("precious\n")
    before = target.read_bytes()
    path.unlink()
    path.symlink_to(target)
    for command in (["advance", "demo"], ["status", "demo"], ["history", "demo"]):
        done = run_cli(*command, cwd=work)
        shown = f"data/demo/{planted}"
        if planted == "state.lock" and command[0] != "advance":
            continue  # read-only commands never open the lock for writing
        if (planted, command[0]) in {("events.jsonl", "status"), ("state.json", "history")}:
            continue  # status does not read the event log, history not the record
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert f"{shown} is a symbolic link" in done.stderr, done.stderr
    assert target.read_bytes() == before


@pytest.mark.parametrize("folder", ["runs", "traces"])
def test_a_linked_artifact_folder_is_refused(work: Path, tmp_path: Path, folder: str) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    path = work / "data" / "demo" / folder
    path.rmdir()
    path.symlink_to(outside)
    done = run_cli("advance", "demo", cwd=work)
    if folder == "runs":
        assert done.returncode == 2 and "data/demo/runs is a symbolic link" in done.stderr, (
            done.stderr
        )
    else:  # a trace is written only when something fails: make it fail
        assert done.returncode == 0, done.stderr
    assert list(outside.iterdir()) == []


def test_a_linked_environment_folder_is_refused(work: Path, tmp_path: Path) -> None:
    real = tmp_path / "moved"
    os.rename(work / "data" / "demo", real)
    (work / "data" / "demo").symlink_to(real)
    for command in (["advance", "demo"], ["status", "demo"]):
        done = run_cli(*command, cwd=work)
        assert done.returncode == 2 and "data/demo is a symbolic link" in done.stderr, done.stderr
    listed = run_cli("list", cwd=work)
    assert listed.returncode == 0 and "symbolic link" in listed.stdout, listed.stdout
    assert (real / "state.json").is_file()
