"""The design card's promise: a phase is added by editing machine.yaml, no code change.

A copy of the shipped machine gets a `smoke_test` phase between `released` and
`starting` (three new states), and an environment is driven through it with
`runner advance`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.e2e import REPO, cleaned_up, tracker_ports
from tests.helpers import run_cli

NEW_STATES = """\
  smoke_testing:    {description: "Checking the released files"}
  smoke_tested:     {description: "Release checked, ready to run"}
  smoke_test_failed: {description: "Release check failed"}
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


def _extended_machine(folder: Path) -> Path:
    shutil.copytree(REPO / "templates", folder / "templates")
    text = (REPO / "machine.yaml").read_text()
    for old, new in (("  starting:", NEW_STATES), ("  - name: run\n    from: released", NEW_PHASE)):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    machine = folder / "machine.yaml"
    machine.write_text(text)
    return machine


def test_a_phase_added_in_yaml_only(tmp_path: Path) -> None:
    machine = _extended_machine(tmp_path / "machine")
    work = tmp_path / "work"
    work.mkdir()

    def cli(*args: str) -> str:
        proc = run_cli("--machine", str(machine), *args, cwd=work,
                       env={"RUNNER_TOFU": "runner-tofu"}, timeout=240)  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    with cleaned_up(work):
        summary = cli("validate")
        assert "created → provisioned → configured → released → smoke_tested → running" in summary
        assert "released --> smoke_testing: smoke_test" in cli("graph")
        cli("create", "demo", *tracker_ports())
        visited = []
        for _ in range(5):
            cli("advance", "demo")
            visited.append(json.loads(cli("--output", "json", "status", "demo"))["state"])
        assert visited == ["provisioned", "configured", "released", "smoke_tested", "running"]
        assert "nothing to advance" in cli("advance", "demo")
        cli("destroy", "demo")
        assert not (work / "build" / "demo").exists()
