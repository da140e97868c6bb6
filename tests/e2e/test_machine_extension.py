"""The design card's promise: adding a phase is an edit of machine.yaml, not of code.

A copy of the shipped machine.yaml (with a copy of templates/ next to it: template
sources resolve against machine.yaml's folder) gets three new states and a
`smoke_test` phase between `released` and `run`, by editing the YAML text only. The
runner validates it, draws it, and drives a new environment through it with
`runner advance`; destroy cleans up."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import REPO, cleaned_up, events, processes_mentioning, state, tracker_ports
from tests.helpers import run_cli

NEW_STATES = """\
  smoke_testing:     {description: "Checking the released files"}
  smoke_tested:      {description: "Release checked, ready to run"}
  smoke_test_failed:
    description: Release check failed
    recovery: "Release again, then `runner resume {{ env.name }}`."
  starting:"""

NEW_PHASE = """\
  - name: smoke_test
    from: released
    via: smoke_testing
    to: smoke_tested
    failed: smoke_test_failed
    steps:
      - name: tracker_config_deployed
        uses: shell
        with: {argv: [test, -f, "{{ outputs.instance_dir }}/storage/tracker/etc/tracker.toml"]}

  - name: run
    from: smoke_tested"""

EDITS = (("  starting:", NEW_STATES), ("  - name: run\n    from: released", NEW_PHASE))


def extended_machine(folder: Path) -> Path:
    """machine.yaml + templates/ copied into ``folder``, the machine edited as text."""
    folder.mkdir()
    shutil.copytree(REPO / "templates", folder / "templates")
    text = (REPO / "machine.yaml").read_text(encoding="utf-8")
    for old, new in EDITS:
        assert text.count(old) == 1, f"the shipped machine.yaml changed: {old!r}"
        text = text.replace(old, new)
    machine = folder / "machine.yaml"
    machine.write_text(text, encoding="utf-8")
    return machine


@pytest.fixture()
def work(tmp_path: Path) -> Iterator[Path]:
    work = tmp_path / "work"
    work.mkdir()
    with cleaned_up(work):  # kills the tracker stand-in if the test fails half way
        yield work


def test_a_phase_added_by_editing_machine_yaml_only(tmp_path: Path, work: Path) -> None:
    machine = extended_machine(tmp_path / "machine")

    def cli(*args: str) -> str:
        proc = run_cli("--machine", machine, *args, cwd=work,
                       env={"RUNNER_TOFU": "runner-tofu"}, timeout=240)  # fmt: skip
        assert proc.returncode == 0, f"runner {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    summary = cli("validate")
    assert "valid machine 'tracker-deploy'" in summary
    assert "happy path: created → provisioned → configured → released → smoke_tested → running" in summary  # fmt: skip
    assert re.search(r"phases \(9\): .*release \[5 steps\], smoke_test \[1 steps?\], run ", summary)
    checked = json.loads(cli("--output", "json", "validate"))
    assert checked["valid"] is True
    assert checked["states"]["smoke_testing"] == "intermediate"
    assert checked["states"]["smoke_test_failed"] == "failed"

    mermaid = cli("graph")
    for edge in ("released --> smoke_testing: smoke_test",
                 "smoke_testing --> smoke_tested: smoke_test",
                 "smoke_testing --> smoke_test_failed: smoke_test failed",
                 "smoke_tested --> starting: run"):  # fmt: skip
        assert edge in mermaid, mermaid
    assert "released --> starting" not in mermaid

    cli("create", "demo", *tracker_ports())
    visited = []
    for _ in range(5):
        cli("advance", "demo")
        visited.append(json.loads(cli("--output", "json", "status", "demo"))["state"])
    assert visited == ["provisioned", "configured", "released", "smoke_tested", "running"]
    assert "nothing to advance" in cli("advance", "demo")
    assert "class running current" in cli("graph", "--env", "demo")

    log = events(work, "demo")
    transitions = [(e["from"], e["to"]) for e in log if e["type"] == "transition"]
    assert transitions[6:10] == [
        ("released", "smoke_testing"),
        ("smoke_testing", "smoke_tested"),
        ("smoke_tested", "starting"),
        ("starting", "running"),
    ]
    assert ("smoke_test", "tracker_config_deployed", "done") in [
        (e["phase"], e["step"], e["status"]) for e in log if e["type"] == "step"
    ]

    cli("destroy", "demo", "--yes")
    assert state(work, "demo")["state"] == "destroyed"
    assert not (work / "build" / "demo").exists()
    assert processes_mentioning(f"{work}{os.sep}") == []
