"""The everyday details an operator notices: global options anywhere, progress without a
terminal, lock waits said, hints shown, graph formats from the file name, "did you
mean", counts and resume reports that read right. Every test runs the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import run_cli

MACHINE = """\
    version: 1
    name: everyday
    initial: created
    states:
      created: {}
      building: {}
      built: {}
      build_failed: {}
      running: {}
      smoking: {}
      smoke_failed: {}
      destroying: {}
      destroyed: {}
      destroy_failed: {}
    phases:
      - name: build
        from: created
        via: building
        to: built
        failed: build_failed
        steps:
          - {name: first, uses: shell, with: {argv: ["true"]}}
          - {name: optional, uses: shell, when: "{{ inputs.extra | default(false) }}", with: {argv: ["true"]}}
          - {name: last, uses: shell, with: {argv: ["sh", "-c", "test ! -e fail"]}}
      - name: smoke_test
        from: built
        via: smoking
        to: running
        failed: smoke_failed
        steps:
          - {name: smoke, uses: shell, with: {argv: ["true"]}}
      - name: destroy
        advance: false
        from: [created, built, build_failed, running, smoke_failed]
        via: destroying
        to: destroyed
        failed: destroy_failed
        steps:
          - {name: remove, uses: shell, with: {argv: ["true"]}}
"""


# --- 1. global options after the command ------------------------------------------------


def test_global_options_are_accepted_after_the_command(work: Path) -> None:
    assert run_cli("create", "demo", cwd=work).returncode == 0
    done = run_cli("advance", "demo", "--lock-timeout", "0", "-v", cwd=work)
    assert done.returncode == 0, done.stderr
    assert "first | " not in done.stdout  # `true` prints nothing; -v streams what there is
    assert "environment 'demo' is now in 'built'" in done.stdout
    document = json.loads(run_cli("status", "demo", "--output", "json", cwd=work).stdout)
    assert document["state"] == "built"
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    validated = run_cli(
        "validate", "--machine", "machine.yaml", "--output=json", f"--workdir={work}", cwd=elsewhere
    )
    assert validated.returncode == 0, validated.stderr
    assert json.loads(validated.stdout)["name"] == "everyday"
    logged = run_cli(
        "phase", "demo", "smoke_test", "--log-level", "INFO", "--log-format", "json", cwd=work
    )
    assert logged.returncode == 0, logged.stderr
    assert all(json.loads(line)["level"] == "INFO" for line in logged.stderr.splitlines())
    assert logged.stderr  # the transitions were logged at INFO, as JSON lines
    assert run_cli("list", "--no-color", cwd=work).returncode == 0
    # an unknown option after the command is still typer's error
    bad = run_cli("status", "demo", "--output", "yaml", cwd=work)
    assert bad.returncode == 2 and "--output" in bad.stderr
