"""`runner up x | head -1`: a reader that closes standard output never abandons a phase.
The phases run on to their end with the output discarded, every step is recorded, and
the command then exits 141 (its output pipe was closed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import build_tree, cli_env, run_cli

MACHINE = """\
    version: 1
    name: pipes
    initial: created
    states:
      created: {description: new}
      building: {description: building}
      built: {description: built}
      build_failed: {description: failed}
      shipping: {description: shipping}
      shipped: {description: shipped}
      ship_failed: {description: failed}
    phases:
      - name: build
        from: created
        via: building
        to: built
        failed: build_failed
        steps:
          - {name: one, uses: shell, with: {argv: ["sh", "-c", "echo one"]}}
          - {name: two, uses: shell, with: {argv: ["sh", "-c", "sleep 0.3; echo two"]}}
          - {name: three, uses: shell, with: {argv: ["sh", "-c", "echo three"]}}
      - name: ship
        from: built
        via: shipping
        to: shipped
        failed: ship_failed
        steps:
          - {name: four, uses: shell, with: {argv: ["sh", "-c", "sleep 0.3; echo four"]}}
"""


def test_a_closed_stdout_does_not_abandon_the_phases(tmp_path: Path) -> None:
    build_tree(tmp_path, {"machine.yaml": MACHINE})
    assert run_cli("create", "demo", cwd=tmp_path).returncode == 0
    runner = subprocess.Popen(
        [sys.executable, "-m", "runner", "-v", "up", "demo"],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert runner.stdout is not None
    first = runner.stdout.readline()  # like `head -1`: one line, then the pipe is closed
    runner.stdout.close()
    _out, err = runner.communicate(timeout=60)
    assert first and b"Traceback" not in err, err
    assert runner.returncode == 141, (runner.returncode, err)
    state = json.loads((tmp_path / "data" / "demo" / "state.json").read_text())
    assert state["state"] == "shipped" and state["run"]["interrupted"] is False
    events = [
        json.loads(line)
        for line in (tmp_path / "data" / "demo" / "events.jsonl").read_text().splitlines()
    ]
    done = [e["step"] for e in events if e["type"] == "step" and e.get("status") == "done"]
    assert done == ["one", "two", "three", "four"]


def _to_full_device(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    with open("/dev/full", "w") as full:
        return subprocess.run(
            [sys.executable, "-m", "runner", *args],
            cwd=work,
            env=cli_env(),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )


def test_standard_output_on_a_full_disk_is_one_error_and_the_phases_still_run(
    tmp_path: Path,
) -> None:
    """Standard output that cannot be written (a full disk): the phases run to their
    end, and every command says so in one line on stderr (never a JSON document to the
    stream that failed, never a traceback), exit 2."""
    build_tree(tmp_path, {"machine.yaml": MACHINE})
    assert run_cli("create", "demo", cwd=tmp_path).returncode == 0
    up = _to_full_device(tmp_path, "up", "demo")
    assert up.returncode == 2, up.stderr
    assert json.loads((tmp_path / "data/demo/state.json").read_text())["state"] == "shipped"
    for args in (
        ("up", "demo"),  # nothing to do: only its message fails
        ("status", "demo"),
        ("--output", "json", "status", "demo"),
        ("list",),
        ("history", "demo"),
        ("validate",),
        ("--output", "json", "status", "nosuch"),  # an error document, to a full disk
    ):
        done = _to_full_device(tmp_path, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr and "internal error" not in done.stderr, args
        assert "cannot write the output to standard output" in done.stderr, (args, done.stderr)
