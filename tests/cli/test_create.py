"""`runner create`: names, inputs from --config and --set, defaults, validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import build_tree, read_state, run_cli

MACHINE = """\
version: 1
name: inputs
initial: new
inputs:
  type: object
  additionalProperties: false
  required: [provider]
  properties:
    provider: {enum: [local, cloud], default: local}
    ssh:
      type: object
      additionalProperties: false
      properties:
        port: {type: integer, default: 22}
        user: {type: string, default: torrust}
    token: {secret: true, type: object}
states:
  new: {}
  going: {}
  gone: {final: true}
  go_failed: {}
phases:
  - {name: go, from: new, via: going, to: gone, failed: go_failed, steps: []}
"""


def test_create_applies_defaults_sets_and_config(work: Path) -> None:
    build_tree(work, {"cfg.yaml": "provider: cloud\nssh: {user: admin}\n"})
    proc = run_cli("create", "demo", "--config", "cfg.yaml", "--set", "ssh.port=2222", cwd=work)
    assert proc.returncode == 0, proc.stderr
    record = read_state(work, "demo")
    assert record["inputs"] == {"provider": "cloud", "ssh": {"user": "admin", "port": 2222}}
    assert record["state"] == "new" and record["serial"] == 1
    assert record["paths"] == {"data_dir": "data/demo", "build_dir": "build/demo"}
    assert (work / "data/demo/state.json").stat().st_mode & 0o777 == 0o600
    assert (work / "data/demo").stat().st_mode & 0o777 == 0o700
    events = (work / "data/demo/events.jsonl").read_text().splitlines()
    assert json.loads(events[0])["type"] == "created"


def test_json_config_and_secret_reference(work: Path) -> None:
    build_tree(work, {"cfg.json": json.dumps({"token": {"env": "MY_TOKEN"}})})
    proc = run_cli(
        "--output", "json", "create", "demo", "--config", "cfg.json", cwd=work,
        env={"MY_TOKEN": "t0ken-value"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout
    assert json.loads(proc.stdout)["inputs"]["token"] == {"env": "MY_TOKEN"}


@pytest.mark.parametrize("name", ["../x", "A", "x/y", "", "9lives", "a_b", "a" * 64, "-x"])
def test_invalid_names_are_refused_with_the_rule(work: Path, name: str) -> None:
    proc = run_cli("create", "--", name, cwd=work)
    assert proc.returncode == 2
    assert "^[a-z][a-z0-9-]{0,62}$" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (work / "data").exists() or not any((work / "data").iterdir())


@pytest.mark.parametrize(
    "args,words",
    [
        (["--set", "ssh.port=abc"], ["inputs.ssh.port", "'abc' is not of type 'integer'"]),
        (["--set", "provider=moon"], ["inputs.provider", "moon"]),
        (["--set", "colour=blue"], ["unknown input 'colour'", "provider"]),
        (["--set", "ssh.colour=blue"], ["inputs.ssh", "unknown input 'colour'"]),
        (["--set", "noequals"], ["KEY=VALUE"]),
        (["--set", "token=hunter2"], ["inputs.token", "never holds the value"]),
        (["--config", "missing.yaml"], ["missing.yaml"]),
        (["--config", "bad.yaml"], ["bad.yaml", "not valid YAML"]),
        (["--config", "list.yaml"], ["list.yaml", "must be a mapping"]),
    ],
)
def test_bad_inputs_are_refused_and_nothing_is_written(
    work: Path, args: list[str], words: list[str]
) -> None:
    build_tree(work, {"bad.yaml": "provider: [unclosed\n", "list.yaml": "- a\n- b\n"})
    proc = run_cli("create", "demo", *args, cwd=work)
    assert proc.returncode == 2, proc.stdout
    for word in words:
        assert word in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (work / "data/demo").exists()


def test_an_existing_environment_is_not_overwritten(work: Path) -> None:
    assert run_cli("create", "demo", cwd=work).returncode == 0
    before = (work / "data/demo/state.json").read_bytes()
    proc = run_cli("create", "demo", "--set", "provider=cloud", cwd=work)
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert (work / "data/demo/state.json").read_bytes() == before


def test_status_list_history_of_a_new_environment(work: Path) -> None:
    run_cli("create", "demo", cwd=work)
    run_cli("create", "alpha", cwd=work)
    status = json.loads(run_cli("--output", "json", "status", "demo", cwd=work).stdout)
    assert status["state"] == "new" and status["locked_by"] is None
    assert any("runner advance demo" in step for step in status["next"])
    listing = json.loads(run_cli("--output", "json", "list", cwd=work).stdout)
    assert [e["environment"] for e in listing["environments"]] == ["alpha", "demo"]
    history = json.loads(run_cli("--output", "json", "history", "demo", cwd=work).stdout)
    assert [e["type"] for e in history["events"]] == ["created"]
    missing = run_cli("status", "nope", cwd=work)
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_the_initial_state_is_of_kind_initial(work: Path) -> None:
    # docs/machine-yaml.md, states: what validate and status call each kind
    summary = json.loads(run_cli("--output", "json", "validate", cwd=work).stdout)
    assert summary["states"] == {
        "new": "initial",
        "going": "intermediate",
        "gone": "final",
        "go_failed": "failed",
    }
    assert run_cli("create", "demo", cwd=work).returncode == 0
    status = json.loads(run_cli("--output", "json", "status", "demo", cwd=work).stdout)
    assert (status["state"], status["kind"]) == ("new", "initial")
