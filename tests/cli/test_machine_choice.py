"""Which machine a command uses: --machine, ./machine.yaml, the file the environment
was created with, the shipped one; and an environment is only moved by a machine of
the name it was created with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner import resources
from tests.helpers import build_tree, read_events, read_state, run_cli


def machine(name: str, description: str = "a small machine") -> str:
    return f"""\
version: 1
name: {name}
description: {description}
initial: new
states:
  new: {{}}
  going: {{}}
  done: {{}}
  go_failed: {{}}
  leaving: {{}}
  gone: {{final: true}}
  leave_failed: {{}}
phases:
  - name: go
    from: new
    via: going
    to: done
    failed: go_failed
    steps:
      - {{name: one, uses: shell, with: {{argv: ["true"]}}}}
  - {{name: destroy, from: any, via: leaving, to: gone, failed: leave_failed, advance: false,
     steps: []}}
"""


def test_create_in_a_folder_without_machine_yaml_says_it_uses_the_shipped_one(
    tmp_path: Path,
) -> None:
    done = run_cli("create", "stray", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    shipped = resources.shipped_machine()
    assert (
        f"using the shipped machine tracker-deploy ({shipped}); pass --machine FILE or add "
        "machine.yaml to use another" in done.stderr
    )
    assert read_state(tmp_path, "stray")["machine"]["file"] == str(shipped)
    # with --output json the note is on stderr, the document alone on stdout
    done = run_cli("--output", "json", "create", "other", cwd=tmp_path)
    assert done.returncode == 0 and json.loads(done.stdout)["environment"] == "other"
    assert "using the shipped machine" in done.stderr


def test_a_machine_yaml_or_machine_option_is_used_without_a_note(tmp_path: Path) -> None:
    build_tree(tmp_path, {"machine.yaml": machine("local-one"), "m/other.yaml": machine("other")})
    done = run_cli("create", "demo", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    assert read_state(tmp_path)["machine"]["file"] == "machine.yaml"
    done = run_cli("--machine", "m/other.yaml", "create", "two", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    assert read_state(tmp_path, "two")["machine"]["file"] == "m/other.yaml"


def test_later_commands_use_the_recorded_machine_file(tmp_path: Path) -> None:
    work = tmp_path / "work"
    build_tree(tmp_path, {"elsewhere/small.yaml": machine("small")})
    work.mkdir()
    outside = tmp_path / "elsewhere" / "small.yaml"
    assert run_cli("--machine", outside, "create", "demo", cwd=work).returncode == 0
    assert read_state(work)["machine"] == {
        "name": "small",
        "digest": read_state(work)["machine"]["digest"],
        "file": str(outside),
    }
    # no --machine, no machine.yaml: the recorded file, not the shipped machine
    status = run_cli("--output", "json", "status", "demo", cwd=work)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "new"
    advanced = run_cli("advance", "demo", cwd=work)
    assert advanced.returncode == 0, advanced.stderr
    assert read_state(work)["state"] == "done"
    assert read_state(work)["machine"]["file"] == str(outside)
    assert run_cli("graph", "--env", "demo", cwd=work).returncode == 0

    # ./machine.yaml comes before the recorded file: another name is refused
    build_tree(work, {"machine.yaml": machine("local-one")})
    refused = run_cli("status", "demo", cwd=work)
    assert refused.returncode == 2
    assert "created with machine 'small', not 'local-one'" in refused.stderr
    (work / "machine.yaml").unlink()

    # the recorded file gone: the shipped machine, which is not the one either
    outside.unlink()
    refused = run_cli("status", "demo", cwd=work)
    assert refused.returncode == 2
    assert "created with machine 'small', not 'tracker-deploy'" in refused.stderr
    assert f"({outside})" in refused.stderr  # the hint names the file it was


COMMANDS = [
    ("advance", "demo"),
    ("up", "demo"),
    ("up", "demo", "--to", "done"),
    ("resume", "demo"),
    ("phase", "demo", "go"),
    ("destroy", "demo"),
    ("status", "demo"),
    ("graph", "--env", "demo"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_a_machine_of_another_name_is_refused(tmp_path: Path, command: tuple[str, ...]) -> None:
    build_tree(tmp_path, {"machine.yaml": machine("first"), "second.yaml": machine("second")})
    assert run_cli("create", "demo", cwd=tmp_path).returncode == 0
    before = (tmp_path / "data/demo/state.json").read_bytes()
    done = run_cli("--machine", "second.yaml", *command, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert (
        "environment 'demo' was created with machine 'first', not 'second' "
        f"({tmp_path / 'second.yaml'})" in done.stderr
    )
    assert "pass --machine FILE of machine 'first' (machine.yaml)" in done.stderr
    assert (tmp_path / "data/demo/state.json").read_bytes() == before
    assert len(read_events(tmp_path)) == 1


def test_the_mismatch_as_json(tmp_path: Path) -> None:
    build_tree(tmp_path, {"machine.yaml": machine("first"), "second.yaml": machine("second")})
    assert run_cli("create", "demo", cwd=tmp_path).returncode == 0
    done = run_cli("--output", "json", "--machine", "second.yaml", "advance", "demo", cwd=tmp_path)
    error = json.loads(done.stdout)
    assert error["error"] == "MachineMismatchError" and error["exit_code"] == 2
    assert (error["machine"], error["recorded_machine"]) == ("second", "first")


def test_a_changed_machine_of_the_same_name_is_allowed(tmp_path: Path) -> None:
    build_tree(tmp_path, {"machine.yaml": machine("first")})
    assert run_cli("create", "demo", cwd=tmp_path).returncode == 0
    digest = read_state(tmp_path)["machine"]["digest"]
    build_tree(tmp_path, {"machine.yaml": machine("first", "the same machine, edited")})
    done = run_cli("advance", "demo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert read_state(tmp_path)["state"] == "done"
    assert read_state(tmp_path)["machine"]["digest"] != digest
